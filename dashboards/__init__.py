"""Grafana dashboards as code, the built-in console and SLA reports.

:mod:`.grafana` is a small model of Grafana's dashboard JSON, :mod:`.queries`
the SQL the panels run on the rollups, :mod:`.boards` the dashboards themselves,
:mod:`.provision` and :mod:`.push` deliver them (files for Grafana's file
provisioning, or Grafana's HTTP API). :mod:`.service_level_boards` holds the
user-experience, SLO and alert dashboards, with their SQL in
:mod:`.experience_queries` and :mod:`.slo_queries`. The SLA report is
:mod:`.report` (figures), :mod:`.outlook` (forecasts), :mod:`.render` and
:mod:`.charts` (HTML, PDF), :mod:`.schedule` (e-mailed each week or month).
"""
