"""``tierscope demo``: the estate started beside the collector, in one process tree.

:func:`run` calls the collector's own ``serve()`` (embedded PostgreSQL,
migrations, tenant and credentials, trace processing, the collector) with
:class:`Estate` as its companion: the apps' databases, the naming rules and
SLOs, the four applications under the agent, the WAN links, the fault board
and its control endpoint, and the simulated users. Ctrl-C, SIGTERM or the end
of ``--minutes`` stop all of it; each app is stopped and waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType

import httpx
import psycopg
import yaml
from rich.console import Console

from tierscope.config import Settings
from tierscope.config.settings import ENV_PREFIX
from tierscope.demo import browsers, seed
from tierscope.demo.control import ControlServer, FaultBoard
from tierscope.demo.faults import read_faults
from tierscope.demo.traffic import Clock, Traffic
from tierscope.demo.wan import WanLink

BRANCH_LATENCY = {"branch-east": 0.04, "branch-west": 0.06}  # seconds one way: a regional WAN
WAN_FAULT_EXTRA = 0.25


@dataclass(frozen=True)
class Options:
    users: int = 12
    seed: int = 1
    minutes: float | None = None
    compress: float = 24.0
    think: float = 2.0
    browsers: int = 2  # real headless Chromium users (each costs a share of a core)
    history: float = 0.0  # days of history backfilled before the users start


class DemoError(Exception):
    """The estate could not start; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _python() -> str:
    return sys.executable


def _agent() -> str:
    script = Path(sys.executable).with_name("tierscope-agent")
    return str(script) if script.exists() else "tierscope-agent"


class App:
    """One demo application as a child process under ``tierscope-agent run``."""

    def __init__(self, service: str, command: list[str], port: int | None, env: dict[str, str], log: Path):
        self.service = service
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else ""
        self.env = {**env, "TIERSCOPE_SERVICE": service}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # ext-services stands for a partner's system: not ours, so not instrumented;
        # the CRM's calls to it are its external tier.
        command = self.command if self.service == "ext-services" else [_agent(), "run", "--", *self.command]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while self.port is not None:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise DemoError(f"{self.service} exited with {self.process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"{self.service} did not answer on {self.url} (log: {self.log})")
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Estate(contextlib.AbstractContextManager["Estate"]):
    """The demo estate beside a running collector (the companion of ``serve``)."""

    def __init__(self, settings: Settings, options: Options, console: Console, dsn: str, credentials: Path):
        self.settings = settings
        self.options = options
        self.console = console
        self.dsn = dsn
        self.credentials_path = credentials
        self.directory = settings.data_dir / "demo"
        self.collector_url = f"http://127.0.0.1:{settings.port}"
        self.apps: list[App] = []
        self.links: list[WanLink] = []
        self._stack = contextlib.ExitStack()
        self._timer: threading.Timer | None = None
        self.browser_problem: str | None = None
        self.browser_users = browsers.BrowserUsers(
            {}, 0, options.seed, (options.think, Clock()), threading.Event()
        )

    # -- start -------------------------------------------------------------
    def __enter__(self) -> Estate:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            keys = json.loads(self.credentials_path.read_text())
        except (OSError, ValueError) as exc:
            raise DemoError(f"cannot read the tenant's keys from {self.credentials_path}: {exc}") from None
        urls = seed.create(self.dsn)
        tenant_id = asyncio.run(_apply_definitions(self.dsn))
        if self.options.history:
            from tierscope.demo.history import backfill

            backfill(self.dsn, tenant_id, self.options, self.console)
        faults_file = self.directory / "faults.json"
        board = FaultBoard(faults_file, self.dsn, tenant_id, urls["crm"]).start()
        self._stack.callback(board.stop)

        env = {k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "PROMETHEUS_"))}
        env.update(
            TIERSCOPE_ENDPOINT=self.collector_url,
            TIERSCOPE_INGEST_KEY=str(keys["ingest_key"]),
            TIERSCOPE_SHUTDOWN_TIMEOUT="3",
            TIERSCOPE_DEMO_FAULTS=str(faults_file),
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=demo",
            # The pages' RUM snippet: the tenant's public, write-only RUM key.
            TIERSCOPE_DEMO_RUM_URL=self.collector_url,
            TIERSCOPE_DEMO_RUM_KEY=str(keys.get("rum_key") or ""),
        )
        logs = self.directory
        ext_port, crm_port, erp_port = free_port(), free_port(), free_port()
        uvicorn = [
            _python(),
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self.apps = [
            App(
                "ext-services",
                [*uvicorn, "--port", str(ext_port), "tierscope.demo.apps.ext:app"],
                ext_port,
                env,
                logs / "ext-services.log",
            ),
            App(
                "crm-web",
                [
                    _python(),
                    "-m",
                    "gunicorn",
                    "-c",
                    "python:tierscope.demo.apps.gunicorn_conf",
                    "-k",
                    "gthread",
                    "--threads",
                    "8",
                    "-w",
                    "1",
                    "-b",
                    f"127.0.0.1:{crm_port}",
                    "--log-level",
                    "warning",
                    "tierscope.demo.apps.crm:app",
                ],
                crm_port,
                {
                    **env,
                    "TIERSCOPE_DEMO_DATABASE_URL": urls["crm"],
                    "TIERSCOPE_DEMO_EXT_URL": f"http://127.0.0.1:{ext_port}",
                },
                logs / "crm-web.log",
            ),
            App(
                "erp-api",
                [*uvicorn, "--port", str(erp_port), "tierscope.demo.apps.erp:app"],
                erp_port,
                {**env, "TIERSCOPE_DEMO_DATABASE_URL": urls["erp"]},
                logs / "erp-api.log",
            ),
            App(
                "erp-worker",
                [_python(), "-m", "tierscope.demo.apps.worker"],
                None,
                {**env, "TIERSCOPE_DEMO_DATABASE_URL": urls["erp"]},
                logs / "erp-worker.log",
            ),
        ]
        for app in self.apps:
            self._stack.callback(app.stop)
            app.start()
        deadline = time.monotonic() + 60
        for app in self.apps:
            app.wait_ready(deadline)

        def wan_extra(site: str) -> float:
            def extra() -> float:
                on = read_faults(faults_file).get("wan_latency", 0) > time.time()
                return WAN_FAULT_EXTRA if on and site == "branch-east" else 0.0

            return extra

        site_urls = {"hq": {"crm": f"http://127.0.0.1:{crm_port}", "erp": f"http://127.0.0.1:{erp_port}"}}
        for site, latency in BRANCH_LATENCY.items():
            site_urls[site] = {}
            for app, port in (("crm", crm_port), ("erp", erp_port)):
                link = WanLink(site, port, latency, _cached(wan_extra(site))).start()
                self._stack.callback(link.stop)
                site_urls[site][app] = f"http://127.0.0.1:{link.port}"

        # The pages' origins (one per site: each reaches the apps on its own port).
        origins = [url for site in site_urls.values() for url in site.values()]
        asyncio.run(_allow_origins(self.dsn, tenant_id, origins))

        traffic = Traffic(
            site_urls,
            self.options.users,
            self.options.seed,
            Clock(compress=self.options.compress),
            think=self.options.think,
        )
        self.browser_problem = browsers.unavailable() if self.options.browsers else None
        count = 0 if self.browser_problem else self.options.browsers
        self.browser_users = browsers.BrowserUsers(
            site_urls, count, self.options.seed, (self.options.think, traffic.clock), traffic.stopping
        )
        self._stack.callback(self.browser_users.join)  # after traffic.stop (callbacks run last first)
        control = ControlServer(board, traffic.observations, traffic.clock).start()
        self._stack.callback(control.stop)
        state = self.directory / "estate.json"
        state.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "control_url": control.url,
                    "collector_url": self.collector_url,
                    "apps": {app.service: app.url for app in self.apps if app.url},
                    "sites": site_urls,
                }
            )
        )
        self._stack.callback(state.unlink, missing_ok=True)
        threading.Thread(
            target=self._start_traffic, args=(traffic,), name="demo-traffic", daemon=True
        ).start()
        self._stack.callback(traffic.stop)
        self._announce(control.url, site_urls)
        if self.options.minutes:
            self._timer = threading.Timer(self.options.minutes * 60, os.kill, (os.getpid(), signal.SIGINT))
            self._timer.daemon = True
            self._timer.start()
            self._stack.callback(self._timer.cancel)

    def _start_traffic(self, traffic: Traffic) -> None:
        """Users start once the collector answers (it starts beside us)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not traffic.stopping.is_set():
            try:
                if httpx.get(f"{self.collector_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if not traffic.stopping.is_set():
            traffic.start()
            self.browser_users.start()

    def _announce(self, control_url: str, sites: dict[str, dict[str, str]]) -> None:
        c = self.console
        c.print(
            f"[bold]tierscope demo[/]: {self.options.users} simulated HTTP users in hq, branch-east, "
            "branch-west"
        )
        c.print(
            f"  console: [bold cyan]{self.collector_url}/[/] (sign in with the api_token of the tenant keys)"
        )
        c.print(
            f"  API: [cyan]{self.collector_url}/api/v1/transactions[/] (Authorization: Bearer <api_token>)"
        )
        c.print(f"  tenant keys (credentials): [cyan]{self.credentials_path}[/]")
        if self.options.compress:
            c.print(
                f"  business week: from Monday 08:00, {self.options.compress:g}x faster than real time "
                "(busy mornings, quiet nights: alerts need traffic)"
            )
        if self.browser_problem:
            c.print(f"  [yellow]no browser users[/]: {self.browser_problem}; the HTTP users run without them")
        elif self.browser_users.users:
            where = ", ".join(user.site for user in self.browser_users.users)
            c.print(
                f"  {len(self.browser_users.users)} browser user(s) (headless Chromium) at {where}: "
                f"[cyan]{self.collector_url}/api/v1/experiences[/]"
            )
        for app in self.apps:
            if app.url:
                c.print(f"  {app.service}: [cyan]{app.url}[/]")
        c.print(f"  CRM pages: [cyan]{sites['hq']['crm']}/leads[/], [cyan]{sites['hq']['crm']}/pipeline[/]")
        c.print(f"  faults: 'tierscope demo faults', or [cyan]{control_url}/faults[/]")
        until = f"; stops by itself after {self.options.minutes:g} min" if self.options.minutes else ""
        c.print(f"  Ctrl-C stops everything{until}.")

    # -- stop --------------------------------------------------------------
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.console.print("stopping the demo estate ...")
        self._stack.close()


def _cached(read: object, ttl: float = 0.5) -> object:
    """``read()`` at most every ``ttl`` seconds (the WAN link asks per chunk)."""
    state = {"at": 0.0, "value": 0.0}

    def value() -> float:
        now = time.monotonic()
        if now - state["at"] > ttl:
            state["at"], state["value"] = now, read()  # type: ignore[operator]
        return state["value"]

    return value


async def _allow_origins(dsn: str, tenant_id: int, origins: list[str]) -> None:
    """Let the estate's pages send beacons with the tenant's RUM key (replacing
    the origins of an earlier run: their ports are gone)."""
    from tierscope.store import rum as rum_store

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await rum_store.set_origins(conn, tenant_id, origins)


async def _apply_definitions(dsn: str) -> int:
    """The estate's naming rules, SLOs and alert rules, applied to tenant ``default`` as
    ``tierscope bt apply`` and ``tierscope slo apply`` would; returns its id."""
    from tierscope.alerting import rules as alert_rules
    from tierscope.collector.server import DEFAULT_TENANT
    from tierscope.processing.naming import Rules
    from tierscope.slo import definitions
    from tierscope.store import alerting as alert_store
    from tierscope.store import processing as processing_store
    from tierscope.store import slo as slo_store

    package = resources.files("tierscope.demo")
    rules_text = package.joinpath("rules.yaml").read_text()
    rules = Rules.parse(rules_text, source="demo/rules.yaml")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT id FROM tenants WHERE name = %s", (DEFAULT_TENANT,))
        row = await cursor.fetchone()
        if row is None:
            raise DemoError(f"tenant {DEFAULT_TENANT!r} is missing from the store")
        tenant_id = int(row[0])
        await processing_store.save_rules(conn, tenant_id, rules.to_document(), "demo/rules.yaml")
        with resources.as_file(package.joinpath("slos.yaml")) as path:
            found = definitions.load(Path(path))
        await slo_store.save(
            conn,
            tenant_id,
            [(s.metadata.name, s.model_dump(mode="json"), "demo/slos.yaml") for s in found.slos],
            [
                (s.metadata.name, s.spec.criticality, s.model_dump(mode="json"), "demo/slos.yaml")
                for s in found.services
            ],
            calendar=None,
            prune=False,
        )
        # Alert rules, unless the user has set an alerting document of their own.
        if await alert_store.get_config(conn, tenant_id) is None:
            text = package.joinpath("alerting.yaml").read_text()
            alert_rules.parse(text)  # a broken shipped document fails here, by its field
            await alert_store.save_config(conn, tenant_id, yaml.safe_load(text), text)
    return tenant_id


# Alerts within two minutes of a fault: rules are judged on minutes 30 s old
# (the settle delay is 15 s), every 10 s. Set in the environment, which is
# where the evaluator process reads its settings; a user's own values win.
DEMO_ALERTING_ENV = {f"{ENV_PREFIX}ALERT_DELAY": "30s", f"{ENV_PREFIX}ALERT_INTERVAL": "10s"}


def run(settings: Settings, options: Options, console: Console) -> None:
    """The whole estate in the foreground until Ctrl-C, SIGTERM or ``--minutes``."""
    from tierscope.collector.server import serve

    for name, value in DEMO_ALERTING_ENV.items():
        os.environ.setdefault(name, value)

    def companion(dsn: str, credentials: Path) -> Estate:
        return Estate(settings, options, console, dsn, credentials)

    serve(settings, console, companion=companion)
