"""The tierscope command line."""
