"""Simulated users: N virtual users in three sites doing the CRM's and the ERP's
daily work with think times, following a business day and week.

Sales staff use the CRM, back-office staff the ERP. ``hq`` reaches the apps
directly; each branch office goes through its own WAN link (``wan.py``). The
pace follows :func:`load_factor` of a simulated clock that runs ``compress``
times faster than the real one (24: a business day per hour); ``compress=0``
keeps the load flat (tests, benchmarks). The simulated week starts on a Monday
at 08:00, whatever the real day: the estate opens with the morning's rush, and
a weekend started demo is not a demo of a quiet weekend. Every user draws from its own
``random.Random(seed, user)``, so a run is reproducible with ``--seed``.
"""

from __future__ import annotations

import calendar
import collections
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

SITES = ("hq", "branch-east", "branch-west")
SITE_SHARE = (0.5, 0.25, 0.25)
# How often each kind of user does what (relative weights); --history uses the same mix.
SALES_MIX = (("leads", 3.0), ("search", 4.0), ("create", 2.0), ("contact", 3.0), ("pipeline", 2.0))
BACKOFFICE_MIX = (
    ("order", 3.0),
    ("inventory", 4.0),
    ("view", 2.0),
    ("invoice", 2.0),
    ("import", 0.4),
    ("rpc", 3.0),
)

# Hour-of-day shape of an office day: busy mornings, a lunch dip, a quieter
# afternoon, and a trickle at night (batch users, other time zones).
_HOURS = (
    0.1,
    0.1,
    0.1,
    0.1,
    0.1,
    0.15,
    0.3,
    0.6,
    1.0,
    1.3,
    1.4,
    1.2,
    0.7,
    0.9,
    1.1,
    1.0,
    0.9,
    0.7,
    0.4,
    0.25,
    0.2,
    0.15,
    0.1,
    0.1,
)


def load_factor(moment: datetime) -> float:
    """How busy the business is at ``moment`` (1.0: an ordinary busy hour)."""
    factor = _HOURS[moment.hour]
    if moment.weekday() >= 5:
        factor *= 0.2
    days = calendar.monthrange(moment.year, moment.month)[1]
    if moment.day >= days - 1:  # month-end close: everyone posts invoices
        factor *= 1.6
    return factor


# Below this share of a busy hour most transactions see too few requests in a
# rule's window to be judged (docs/alerting.md, "Where the two minutes are tested").
QUIET = 0.4
OPENING = 8  # the simulated week starts on a Monday at this hour


def monday_morning(now: datetime) -> datetime:
    """The Monday of ``now``'s week at opening time."""
    day = (now - timedelta(days=now.weekday())).date()
    return datetime(day.year, day.month, day.day, OPENING, tzinfo=UTC)


@dataclass
class Clock:
    """The simulated business time: starts at ``origin`` (a Monday morning),
    runs ``compress`` times faster than the real one."""

    compress: float = 24.0
    started: float = field(default_factory=time.time)
    origin: datetime | None = None  # the simulated moment at ``started``

    def __post_init__(self) -> None:
        if self.origin is None:
            self.origin = monday_morning(datetime.fromtimestamp(self.started, UTC))

    def now(self, at: float | None = None) -> datetime:
        assert self.origin is not None
        elapsed = ((time.time() if at is None else at) - self.started) * self.compress
        return self.origin + timedelta(seconds=elapsed)

    def factor(self, at: float | None = None) -> float:
        return 1.0 if self.compress == 0 else load_factor(self.now(at))

    def busy_again_in(self, step: float = 30.0, horizon: float = 6 * 3600) -> float:
        """Real seconds until the business is no longer quiet (0 when it is not)."""
        at = time.time()
        waited = 0.0
        while self.factor(at + waited) < QUIET and waited < horizon:
            waited += step
        return waited

    def describe(self) -> dict[str, object]:
        """The simulated moment, how busy it is, and when a quiet spell ends."""
        if self.compress == 0:
            return {"business_time": None, "load_factor": 1.0, "busy_again_in_s": 0.0}
        return {
            "business_time": self.now().strftime("%a %H:%M"),
            "load_factor": round(self.factor(), 2),
            "busy_again_in_s": self.busy_again_in(),
        }


class Observations:
    """What the users saw (site, action, seconds, ok), newest kept: the
    customer's-eye ground truth, e.g. for the WAN fault that no server sees."""

    def __init__(self, keep: int = 50_000) -> None:
        self._rows: collections.deque[tuple[float, str, str, float, bool]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self.requests = 0

    def add(self, site: str, action: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self._rows.append((time.time(), site, action, seconds, ok))
            self.requests += 1

    def summary(
        self, since: float = 0.0, until: float = float("inf")
    ) -> dict[str, dict[str, dict[str, float]]]:
        """{site: {action: {count, errors, mean_ms}}} of requests made in ``[since, until)``."""
        table: dict[str, dict[str, list[float]]] = {}
        with self._lock:
            rows = [row for row in self._rows if since <= row[0] < until]
        for _, site, action, seconds, ok in rows:
            cell = table.setdefault(site, {}).setdefault(action, [0, 0, 0.0])
            cell[0] += 1
            cell[1] += 0 if ok else 1
            cell[2] += seconds
        return {
            site: {
                a: {"count": c[0], "errors": c[1], "mean_ms": 1000 * c[2] / c[0]} for a, c in actions.items()
            }
            for site, actions in table.items()
        }


class VirtualUser(threading.Thread):
    """One user: a session at a site, a job (sales or back office), a pace."""

    def __init__(self, number: int, site: str, urls: dict[str, str], traffic: Traffic) -> None:
        super().__init__(name=f"demo-user-{number}", daemon=True)
        self.rng = random.Random(f"{traffic.seed}:{number}")
        self.site = site
        self.role = "sales" if number % 2 == 0 else "backoffice"
        self.login = f"user{number % 60 + 1:02d}"
        self.traffic = traffic
        self.urls = urls
        self.http = httpx.Client(timeout=10.0, headers={"X-Demo-Site": site, "X-Demo-User": self.login})
        self.orders: list[int] = []

    def run(self) -> None:
        stop = self.traffic.stopping
        stop.wait(self.rng.random() * self.traffic.think)  # users do not all start at once
        while not stop.is_set():
            self.http.headers["X-Demo-Session"] = uuid.UUID(int=self.rng.getrandbits(128)).hex
            if self.role == "sales":
                self._do("login", "POST", "crm", "/login", data={"login": self.login, "password": "demo"})
            for _ in range(self.rng.randint(10, 30)):
                if stop.is_set():
                    break
                self._act()
                pause = self.rng.expovariate(1.0 / self.traffic.think) / max(
                    self.traffic.clock.factor(), 0.05
                )
                stop.wait(min(pause, 60.0))
        self.http.close()

    def _act(self) -> None:
        rng = self.rng
        if self.role == "sales":
            choice = rng.choices(*zip(*SALES_MIX, strict=True))[0]
            if choice == "leads":
                self._do("leads", "GET", "crm", "/leads")
            elif choice == "search":
                self._do("search", "GET", "crm", "/api/leads", params={"q": rng.choice("ABGHINOQUVZ")})
            elif choice == "create":
                lead = {"name": f"Lead {rng.randint(1, 10**6)}", "company": "Prospect", "city": "Lyon"}
                self._do("create_lead", "POST", "crm", "/api/leads", json=lead)
            elif choice == "contact":
                self._do("contact", "GET", "crm", f"/contacts/{rng.randint(1, 500)}")
            else:
                self._do("pipeline", "GET", "crm", "/pipeline")
            return
        choice = rng.choices(*zip(*BACKOFFICE_MIX, strict=True))[0]
        if choice == "order" or (choice in ("view", "invoice") and not self.orders):
            lines = [
                {"sku": f"SKU-{rng.randint(0, 199):04d}", "quantity": rng.randint(1, 9)} for _ in range(3)
            ]
            response = self._do(
                "order",
                "POST",
                "erp",
                "/api/orders",
                json={"customer_id": rng.randint(1, 300), "lines": lines},
            )
            if response is not None and response.status_code == 201:
                self.orders.append(int(response.json()["id"]))
                del self.orders[:-20]
        elif choice == "inventory":
            self._do("inventory", "GET", "erp", f"/api/inventory/SKU-{rng.randint(0, 199):04d}")
        elif choice == "view":
            self._do("view_order", "GET", "erp", f"/api/orders/{rng.choice(self.orders)}")
        elif choice == "invoice":
            self._do("post_invoice", "POST", "erp", f"/api/invoices/{self.orders.pop()}/post")
        elif choice == "import":
            self._do("import", "POST", "erp", "/api/imports", json={"rows": rng.randint(20, 200)})
        else:
            method = rng.choice(("partner.search", "product.read"))
            call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"term": rng.choice("ACEGIKMO")}}
            self._do("rpc", "POST", "erp", "/rpc", json=call)

    def _do(self, action: str, method: str, app: str, path: str, **kwargs: object) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = self.http.request(method, self.urls[app] + path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            self.traffic.observations.add(self.site, action, time.perf_counter() - started, False)
            return None
        ok = response.status_code < 500
        self.traffic.observations.add(self.site, action, time.perf_counter() - started, ok)
        return response


class Traffic:
    """The virtual users of the estate. ``urls[site][app]`` is where a site reaches an app."""

    def __init__(
        self, urls: dict[str, dict[str, str]], users: int, seed: int, clock: Clock, think: float = 2.0
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.think = think
        self.stopping = threading.Event()
        self.observations = Observations()
        sites = random.Random(seed).choices(SITES, SITE_SHARE, k=users)
        # Every site has users of both kinds, however few users there are.
        sites[: min(users, 6)] = ["hq", "hq", "branch-east", "branch-east", "branch-west", "branch-west"][
            :users
        ]
        self.users = [VirtualUser(n, site, urls[site], self) for n, site in enumerate(sites)]

    def start(self) -> Traffic:
        for user in self.users:
            if self.stopping.is_set():
                break
            user.start()
        return self

    def stop(self) -> None:
        # A stop can come while start() is still starting users (SIGTERM during
        # the estate's start): only the users that started have a thread to join.
        self.stopping.set()
        for user in self.users:
            if user.ident is not None:
                user.join(15)
