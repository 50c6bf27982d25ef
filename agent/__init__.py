"""The tierscope agent: runs inside the monitored Python application.

It is a thin, standard OpenTelemetry set-up and imports nothing from the server
side (collector, store, ...), so the base ``pip install tierscope`` is all an
application needs. ``tests/test_packaging.py`` holds it to that.
"""
