"""Alerting: rules over rollups, SLOs and baselines, localised to a tier and
component, ranked by business impact, delivered at least once (docs/alerting.md).

A pipeline of small stages: :mod:`signals` (which rules hold) → :mod:`localise`
(where) → :mod:`evaluator` (incidents, :mod:`lifecycle`, :mod:`impact`, the
outbox) → :mod:`delivery` (:mod:`routing`, :mod:`mute`, :mod:`notifiers`).
:mod:`service` runs it inside ``tierscope up``; :mod:`api` serves it.
"""
