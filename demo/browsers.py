"""Browser users: a few simulated users who are real headless Chromium sessions.

They walk the CRM's and the ERP's pages like people at a desk: open the lead
list and search it (an in-page fetch), look at a contact, the opportunity
pipeline, the ERP's order desk where they check stock and post invoices (more
in-page fetches), with think times between. Their pages carry the RUM snippet,
so each page load and each click becomes an *experience* joined to the server's
trace and split into tiers (browser, network, server tiers).

Chromium is Debian's package, driven by Playwright (``executable_path``); every
request not to 127.0.0.1 is aborted by a route in the browser context. Each
user has its own thread, Playwright instance and browser: Playwright's sync API
is bound to the thread that started it. Their number is small on purpose (a
Chromium costs a share of a core while it renders): 2 by default.

When Chromium or Playwright is missing, :func:`unavailable` says why and the
rest of the estate runs without browser users.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import re
import shutil
import threading
from typing import Any

from tierscope.demo.apps.common import SITE_COOKIE
from tierscope.demo.traffic import Clock

_logger = logging.getLogger(__name__)

# The same flags as the browser tests: root, headless, offline (no background
# calls to the internet, which this machine must not make).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# A pattern, not a Python callback: Chromium matches it itself, so loopback
# requests never wait for this process.
NOT_LOOPBACK = re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/]).*")
# Which site each browser user works at, in order: hq first, then a branch
# office behind its WAN link (so the network tier shows in experiences).
BROWSER_SITES = ("hq", "branch-east", "branch-west", "hq")
MAX_BROWSERS = len(BROWSER_SITES)
# What Playwright says when its driver process is gone.
DRIVER_GONE = "Connection closed while reading from the driver"


class _QuietDriverExit(logging.Filter):
    """Drops asyncio's reports of Playwright futures left unanswered at Ctrl-C.

    Ctrl-C in a terminal signals the whole foreground process group, Playwright's
    driver included, and the driver exits before the users have closed their
    pages; asyncio then reports each of its unanswered futures as an error. Once
    the demo is stopping they say nothing a user should act on.
    """

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.stop.is_set() and DRIVER_GONE in record.getMessage())


def chromium_path() -> str | None:
    return shutil.which("chromium")


def unavailable() -> str | None:
    """Why browser users cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install 'tierscope[demo]')"
    if chromium_path() is None:
        return "Debian's chromium is missing (make run installs it as root; or: apt-get install chromium)"
    return None


class BrowserUser(threading.Thread):
    """One person in a browser at a site, walking the CRM and ERP pages."""

    def __init__(
        self,
        number: int,
        site: str,
        urls: dict[str, str],
        seed: int,
        pace: tuple[float, Clock],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"demo-browser-{number}", daemon=True)
        self.number = number
        self.site = site
        self.urls = urls
        self.rng = random.Random(f"{seed}:browser:{number}")
        self.mean_think, self.clock = pace
        self.stop = stop
        self.pages = 0
        self.failures = 0
        self.error: str | None = None

    def run(self) -> None:
        from playwright.sync_api import Error, sync_playwright

        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                try:
                    self._walk(browser)
                finally:
                    browser.close()
        except Error as exc:  # Chromium failed to start or died: the HTTP users go on
            if self.stop.wait(2.0):  # Ctrl-C reached the driver too: the demo is stopping
                _logger.debug("browser user %d stopped with the demo: %s", self.number, exc)
                return
            self.error = str(exc).splitlines()[0][:300]
            _logger.warning("browser user %d stopped: %s", self.number, self.error)

    def _walk(self, browser: Any) -> None:
        from playwright.sync_api import Error

        while not self.stop.is_set():
            # A new context is a new browser profile: a new RUM session per work session.
            context = browser.new_context()
            context.route(NOT_LOOPBACK, lambda route: route.abort())
            context.add_cookies(
                [{"name": SITE_COOKIE, "value": self.site, "url": url} for url in self.urls.values()]
            )
            context.set_default_timeout(20_000)
            page = context.new_page()
            try:
                for _ in range(self.rng.randint(8, 20)):
                    if self.stop.is_set():
                        break
                    try:
                        self._act(page)
                        self.pages += 1
                    except Error as exc:
                        # A slow or failing page (a fault is on): what a user sees, not ours to fix.
                        self.failures += 1
                        _logger.debug("browser user %d: %s", self.number, exc)
                    self.stop.wait(self.think())
            finally:
                try:
                    page.close(run_before_unload=True)  # page hide: the script sends what it holds
                    context.close()
                except Error:
                    pass

    def think(self) -> float:
        """A pause like the HTTP users': exponential, longer when the business is quiet."""
        pause = self.rng.expovariate(1.0 / self.mean_think) / max(self.clock.factor(), 0.05)
        return min(pause, 60.0)

    def _act(self, page: Any) -> None:
        crm, erp = self.urls["crm"], self.urls["erp"]
        choice = self.rng.choices(("leads", "search", "contact", "pipeline", "desk"), (2, 3, 2, 2, 3))[0]
        if choice in ("leads", "search"):
            page.goto(f"{crm}/leads")
            if choice == "search":
                page.fill("#q", self.rng.choice("ABGHINOQUVZ"))
                page.click("#search button")
                page.wait_for_selector("#found[data-done]")
        elif choice == "contact":
            page.goto(f"{crm}/contacts/{self.rng.randint(1, 500)}")
        elif choice == "pipeline":
            page.goto(f"{crm}/pipeline")
        else:
            page.goto(f"{erp}/orders")
            buttons = page.locator("button[data-call]")
            count = buttons.count()
            if count:
                buttons.nth(self.rng.randrange(count)).click()
                page.wait_for_selector("#result[data-done]")


class BrowserUsers:
    """``count`` browser users over the sites' URLs (``urls[site][app]``)."""

    def __init__(
        self,
        urls: dict[str, dict[str, str]],
        count: int,
        seed: int,
        pace: tuple[float, Clock],
        stop: threading.Event,
    ) -> None:
        sites = BROWSER_SITES[: max(0, min(count, MAX_BROWSERS))]
        self.quiet = _QuietDriverExit(stop)
        self.users = [
            BrowserUser(number, site, urls[site], seed, pace, stop) for number, site in enumerate(sites)
        ]

    def start(self) -> BrowserUsers:
        if self.users:
            # Never removed: asyncio reports a lost future when it is collected, after join().
            logging.getLogger("asyncio").addFilter(self.quiet)
        for user in self.users:
            user.start()
        return self

    def join(self, timeout: float = 20.0) -> None:
        for user in self.users:
            user.join(timeout)

    def stats(self) -> list[dict[str, Any]]:
        return [
            {"site": u.site, "pages": u.pages, "failures": u.failures, "error": u.error} for u in self.users
        ]
