"""Tools for testing and benchmarking tierscope against real components: a
collector process, realistic OTLP batches. Shipped with the package (as
OpenTelemetry ships its in-memory exporter) so users can test their own set-ups."""
