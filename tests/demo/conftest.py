"""One real ``tierscope demo`` for the module: its own data directory and embedded
PostgreSQL, the collector on a free port, the four apps, the users; flat load
(``--compress 0``) so that before/after comparisons are fair."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import psycopg
import pytest

from tierscope.testing.browser import browser, page  # noqa: F401 - fixtures (on the chromium below)
from tierscope.testing.chromium import ChromiumMissing, ensure_chromium
from tierscope.testing.collector import free_port, tierscope_command

if TYPE_CHECKING:
    from .campaign import BackgroundCampaign


# The demo alert campaign the session runs beside other tests (campaign.py)
CAMPAIGN: pytest.StashKey[BackgroundCampaign] = pytest.StashKey()


def _runs_the_alert_campaign(item: pytest.Item) -> bool:
    return item.path.name == "test_alerts.py" and item.path.parent.name == "demo"


@pytest.hookimpl(trylast=True)  # after deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the campaign to run: first the tests that run beside it, then the
    campaign's judgement, then the rest (campaign.BESIDE), each in its order."""
    if not any(map(_runs_the_alert_campaign, items)):
        return
    from .campaign import BESIDE, NOT_BESIDE

    def place(item: pytest.Item) -> int:
        if _runs_the_alert_campaign(item):
            return 1
        path = item.path.relative_to(config.rootpath).as_posix()
        return 0 if path.startswith(BESIDE) and not path.startswith(NOT_BESIDE) else 2

    items.sort(key=place)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the campaign as the session starts, if ``test_alerts.py`` is to run."""
    if session.config.option.collectonly or not any(map(_runs_the_alert_campaign, session.items)):
        return
    from .campaign import BackgroundCampaign

    background = BackgroundCampaign()
    background.start()
    session.config.stash[CAMPAIGN] = background


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop a campaign still running (the session was cut short) with its estate."""
    background = session.config.stash.get(CAMPAIGN, None)
    if background is not None:
        background.stop()


class DemoProcess:
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        minutes: float = 15,
        users: int = 12,
        browsers: int = 2,
    ) -> None:
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.minutes = minutes
        self.users = users
        self.browsers = browsers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "demo.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_after = 0.0  # seconds from the command to the URLs printed and the collector up

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*tierscope_command(), "demo", *args, "--data-dir", str(self.data_dir), "--port", str(self.port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "250"},  # tables and long paths on one line each
        )

    def start(self, ready: bool = True) -> DemoProcess:
        """Start the demo; return once its estate is up and (``ready``) its collector answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSCOPE_")}
        env.update(TIERSCOPE_WORKERS="1", TIERSCOPE_LOG_LEVEL="warning", TIERSCOPE_SETTLE_DELAY="5s")
        env.update(COLUMNS="250")  # the start banner's URLs and paths on one line each
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *tierscope_command(),
                    "demo",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    "--users",
                    str(self.users),
                    "--browsers",
                    str(self.browsers),
                    "--think",
                    "0.6",
                    "--compress",
                    "0",
                    "--seed",
                    "7",
                    "--minutes",
                    f"{self.minutes:g}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        began = time.monotonic()
        deadline = began + 120
        while not (self.data_dir / "demo" / "estate.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tierscope demo did not start:\n{self.log()}")
            time.sleep(0.3)
        if not ready:
            return self
        while True:  # the collector starts once the estate is up
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.ready_after = time.monotonic() - began
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tierscope demo's collector did not start:\n{self.log()}")
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "demo" / "estate.json").read_text()))

    def get(self, path: str, **params: Any) -> httpx.Response:
        """A GET of the API with the tenant's token, whatever it answers."""
        token = json.loads((self.data_dir / "credentials.json").read_text())["api_token"]
        return httpx.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )

    def api(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def store(self) -> psycopg.Connection:
        access = json.loads((self.data_dir / "postgres.json").read_text())
        return psycopg.connect(
            host="127.0.0.1",
            port=access["port"],
            user=access["user"],
            password=access["password"],
            dbname="tierscope",
            autocommit=True,
        )

    def tree(self) -> list[psutil.Process]:
        assert self.process is not None
        return [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a terminal sends it: SIGINT to the whole process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for process in self.tree():
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            self.process.wait()


@pytest.fixture(scope="session")
def chromium() -> str:
    """The demo's browser users need Debian's chromium (installed when missing, as root)."""
    try:
        return ensure_chromium()
    except ChromiumMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def demo(chromium: str) -> Iterator[DemoProcess]:
    yield from running_demo()


def running_demo(
    env: dict[str, str] | None = None, minutes: float = 15, ready: bool = True, **options: int
) -> Iterator[DemoProcess]:
    # Not under pytest's basetemp: a concurrent pytest session resets that tree
    # to mode 0700, which would lock the embedded PostgreSQL's user out mid-run.
    root = Path(tempfile.mkdtemp(prefix="tierscope-demo-test-"))
    process = DemoProcess(root / "data", env, minutes, **options)
    try:
        process.start(ready)
        yield process
    finally:
        process.kill()
        data = process.data_dir
        # The embedded PostgreSQL outlives a killed estate: stop it like tierscope would.
        if (data / "postgres").exists():
            from tierscope.store.embedded import EmbeddedPostgres

            EmbeddedPostgres(data).stop(force=True)
        shutil.rmtree(root, ignore_errors=True)
