"""The demo estate behind ``tierscope demo``: a CRM and an ERP, instrumented by
the agent, under simulated users, with faults switched on at run time.

See ``docs/demo.md``. Nothing here is imported by the platform itself; the
estate only talks to the collector over HTTP, as any customer application does.
"""
