"""Routes: which receivers an alert goes to, by severity and service.

Routes are read in order; an alert goes to the first route that matches, and
on to the next ones while the matched route says ``continue``. A route with no
condition matches everything (the catch-all). The configuration is the
tenant's, so routing by tenant is routing by document.
"""

from __future__ import annotations

from tierscope.alerting.mute import Labels
from tierscope.alerting.rules import AlertingConfig


def receivers_for(config: AlertingConfig, labels: Labels) -> list[str]:
    chosen: list[str] = []
    for route in config.routes:
        if route.severity is not None and not set(route.severity) & set(labels.get("severity", [])):
            continue
        services = set(labels.get("service", [])) | set(labels.get("business_service", []))
        if route.service is not None and not set(route.service) & services:
            continue
        if route.receiver not in chosen:
            chosen.append(route.receiver)
        if not route.continue_:
            break
    return chosen
