"""The demo estate's applications. Each runs in its own process under
``tierscope-agent run``, so it is instrumented exactly as a customer's app is."""
