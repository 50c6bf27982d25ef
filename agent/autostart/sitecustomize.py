"""Started by Python itself at interpreter start-up (``tierscope-agent run`` puts this
folder on ``PYTHONPATH``): starts the agent before the application's code runs, in
every Python process of the command — the server, its spawned workers, the
autoreloader's child.
"""

try:
    import tierscope.agent

    tierscope.agent.init()
except Exception:  # noqa: S110 - the application must start whatever happens here
    pass
