"""A batch process of the ERP with no signal handling of its own: it records some
steps, says so, then idles until a service manager stops it with SIGTERM."""

import os
import time

from opentelemetry import trace

tracer = trace.get_tracer("erp.nightly")
for number in range(int(os.environ.get("NIGHTLY_STEPS", "20"))):
    with tracer.start_as_current_span(f"nightly step {number}"):
        pass
print("steps recorded", flush=True)
time.sleep(120)
