"""Grafana dashboards as code, the built-in console and SLA reports.

:mod:`.grafana` is a small model of Grafana's dashboard JSON, :mod:`.queries`
the SQL the panels run on the rollups, :mod:`.boards` the dashboards themselves,
:mod:`.provision` and :mod:`.push` deliver them (files for Grafana's file
provisioning, or Grafana's HTTP API).
"""
