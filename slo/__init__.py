"""SLOs, error budgets, burn rates, attribution, baselines and forecasts, from the rollups."""
