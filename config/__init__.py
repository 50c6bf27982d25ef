"""Configuration shared by the server side: the collector, the store and the CLI."""

from tierscope.config.settings import (
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    parse_size,
)

__all__ = ("Settings", "SettingsError", "load_settings", "parse_duration", "parse_size")
