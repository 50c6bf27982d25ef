"""What every demo application shares: its database pool, the fault switch,
the user and site of a request, and dying with the estate that started it."""

from __future__ import annotations

import hashlib
import html
import os
import threading
import time
from collections.abc import Mapping

from opentelemetry import trace
from psycopg_pool import ConnectionPool

from tierscope.demo.faults import FaultSwitch

SITE_HEADER = "x-demo-site"
USER_HEADER = "x-demo-user"
SESSION_HEADER = "x-demo-session"
SITE_COOKIE = "demo_site"  # the office a browser user works in, set at the user's first visit
SITES = ("hq", "branch-east", "branch-west")

faults = FaultSwitch()


def pool(size: int = 4) -> ConnectionPool:
    """A small pool on the app's own database (``TIERSCOPE_DEMO_DATABASE_URL``)."""
    return ConnectionPool(
        os.environ["TIERSCOPE_DEMO_DATABASE_URL"], min_size=1, max_size=size, open=True, timeout=10
    )


def tag_request(headers: Mapping[str, str], cookies: Mapping[str, str] | None = None) -> None:
    """Put who made the request, and from which site, on its server span: what a
    real app knows from its session and its users' office network."""
    span = trace.get_current_span()
    site = site_of(headers, cookies or {})
    if site:
        span.set_attribute("tierscope.site", site[:32])
    user = headers.get(USER_HEADER)
    if user:
        span.set_attribute("enduser.id", user[:64])
    session = headers.get(SESSION_HEADER)
    if session:
        span.set_attribute("session.id", session[:64])


def site_of(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The site of a request: the header the simulated HTTP users send, or the
    cookie of a browser user; only the estate's own site names are trusted."""
    site = headers.get(SITE_HEADER) or cookies.get(SITE_COOKIE)
    return site if site in SITES else None


def rum_tag(site: str | None) -> str:
    """The RUM snippet of a page: the collector's ``rum.js`` with the tenant's
    public RUM key (``TIERSCOPE_DEMO_RUM_URL``/``_KEY``, set by the estate) and
    the user's site; the script names the page from its path. Empty when the
    estate gave no key."""
    url = os.environ.get("TIERSCOPE_DEMO_RUM_URL", "").rstrip("/")
    key = os.environ.get("TIERSCOPE_DEMO_RUM_KEY", "")
    if not url or not key:
        return ""
    attributes = {"src": f"{url}/rum.js", "data-key": key, "data-endpoint": url}
    if site:
        attributes["data-site"] = site
    text = " ".join(f'{name}="{html.escape(value, quote=True)}"' for name, value in attributes.items())
    return f"<script async {text}></script>"


_BURN_BLOCK = bytes(range(256)) * 4096  # 1 MiB to hash over and over


def burn_cpu(seconds: float) -> None:
    """Busy work (the ``app_cpu`` fault): ``seconds`` of this thread's CPU time,
    no sleeping. Hashing, as a checksum- or crypto-heavy handler would: hashlib
    releases the GIL for large buffers, so the burn costs this request CPU and
    does not also stall the process's other threads on the GIL (which would
    move their database and external calls, and the fault would not stay in
    the app tier of its own transaction)."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        hashlib.sha256(_BURN_BLOCK).digest()


def die_with_parent() -> None:
    """End this process when the estate that started it is gone, even after a
    ``kill -9`` of the estate: nothing of the demo is left running."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="demo-parent-watch", daemon=True).start()
