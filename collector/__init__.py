"""The collector: OTLP/HTTP ingest, the query API, health and metrics."""
