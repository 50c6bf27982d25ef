"""Put on ``PYTHONPATH`` by ``tierscope-agent run``: its ``sitecustomize`` starts the agent."""
