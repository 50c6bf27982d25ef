"""The built-in console: what anyone who ran ``make run`` sees, with no Grafana.

Server-rendered (Jinja2, autoescaped), charts as inline SVG drawn here, no
script at all, and a Content-Security-Policy that would stop one anyway.
"""
