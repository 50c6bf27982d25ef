"""The ``tierscope`` command.

Commands that need the store use ``TIERSCOPE_DATABASE_URL`` or, without it, the
embedded PostgreSQL of ``--data-dir`` (started for the command and stopped
after, or shared with a ``tierscope up`` already running there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.table import Table

from tierscope.config import Settings, SettingsError, load_settings, parse_duration
from tierscope.store import StoreError
from tierscope.store import tenants as tenant_store
from tierscope.store.embedded import EmbeddedPostgresError

T = TypeVar("T")

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where tierscope keeps its embedded database and credentials "
    "(env TIERSCOPE_DATA_DIR; default ~/.local/share/tierscope).",
)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Store and embedded-server failures as one-line messages, not tracebacks."""
    try:
        yield
    except (StoreError, EmbeddedPostgresError) as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach the store: {str(exc).strip()}") from None


def _with_store(settings: Settings, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work`` on one autocommit connection to the store, migrated first."""
    from tierscope.collector.server import migrate, store_dsn

    async def run(dsn: str) -> T:
        await migrate(dsn)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await work(conn)

    with _store_errors(), store_dsn(settings) as dsn:
        return asyncio.run(run(dsn))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("tierscope"), prog_name="tierscope")
def main() -> None:
    """tierscope: application performance and customer-experience monitoring."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 4318).")
@data_dir_option
def up(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the collector (and the embedded database) in the foreground."""
    from tierscope.collector.server import serve

    settings = _settings(host=host, port=port, data_dir=data_dir)
    logging.getLogger().setLevel(settings.log_level.upper())
    from tierscope.collector.server import CollectorError

    with _store_errors():
        try:
            serve(settings, console)
        except CollectorError as exc:
            raise click.ClickException(str(exc)) from None


@main.group()
def db() -> None:
    """The store's schema."""


@db.command("migrate")
@data_dir_option
def db_migrate(data_dir: Path | None) -> None:
    """Apply pending schema migrations (tierscope up also does this)."""
    from tierscope.collector.server import migrate, store_dsn

    settings = _settings(data_dir=data_dir)
    with _store_errors(), store_dsn(settings, console) as dsn:
        applied = asyncio.run(migrate(dsn, console))
    console.print(f"applied {len(applied)} migration(s)" if applied else "the schema is up to date")


@main.group()
def tenant() -> None:
    """Tenants and their keys."""


def _print_credentials(credentials: tenant_store.Credentials, as_json: bool, what: str) -> None:
    if as_json:
        out.print_json(json.dumps(credentials.as_dict()))
        return
    console.print(f"{what} [bold]{credentials.tenant}[/]. Keep these; they are not shown again:")
    for field, value in credentials.as_dict().items():
        if field != "tenant" and value:
            out.print(f"  {field:<11} {value}")


@tenant.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the credentials as one JSON object.")
@data_dir_option
def tenant_create(name: str, as_json: bool, data_dir: Path | None) -> None:
    """Create tenant NAME with an ingest key, a RUM key and an API token."""
    settings = _settings(data_dir=data_dir)

    async def work(conn: psycopg.AsyncConnection) -> tenant_store.Credentials:
        try:
            return await tenant_store.create_tenant(conn, name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="NAME") from None

    _print_credentials(_with_store(settings, work), as_json, "created tenant")


@tenant.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def tenant_list(as_json: bool, data_dir: Path | None) -> None:
    """List tenants and how many live keys each has."""
    rows = _with_store(_settings(data_dir=data_dir), tenant_store.list_tenants)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("tenant", "created", "ingest keys", "RUM keys", "API tokens")
    for row in rows:
        table.add_row(
            row["name"],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            str(row["ingest_keys"]),
            str(row["rum_keys"]),
            str(row["api_tokens"]),
        )
    out.print(table)


_KIND = click.Choice(["ingest", "rum", "api", "all"])


@tenant.command("rotate")
@click.argument("name")
@click.option("--kind", type=_KIND, default="all", show_default=True, help="Which keys to rotate.")
@click.option(
    "--grace", default="24h", show_default=True, help="How long the old keys keep working (e.g. 0s, 1h, 7d)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the new credentials as JSON.")
@data_dir_option
def tenant_rotate(name: str, kind: str, grace: str, as_json: bool, data_dir: Path | None) -> None:
    """Issue new keys for NAME; the old ones stop working after --grace."""
    try:
        grace_period: timedelta = parse_duration(grace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    kinds = tenant_store.KINDS if kind == "all" else (kind,)

    async def work(conn: psycopg.AsyncConnection) -> tenant_store.Credentials:
        return await tenant_store.rotate(conn, name, kinds, grace_period)

    _print_credentials(_with_store(_settings(data_dir=data_dir), work), as_json, "new keys for")
    console.print(f"the previous keys stop working in {grace_period}")


@tenant.command("revoke")
@click.argument("name")
@click.option("--key", default=None, help="The key to revoke.")
@click.option("--kind", type=_KIND, default=None, help="Revoke every key of this kind.")
@data_dir_option
def tenant_revoke(name: str, key: str | None, kind: str | None, data_dir: Path | None) -> None:
    """Revoke a key of NAME (--key), or all its keys of a kind (--kind), at once."""
    if (key is None) == (kind is None):
        raise click.UsageError("give exactly one of --key or --kind")
    kinds = tenant_store.KINDS if kind == "all" else (kind,)

    async def work(conn: psycopg.AsyncConnection) -> int:
        if key is not None:
            return await tenant_store.revoke(conn, name, key=key)
        return sum([await tenant_store.revoke(conn, name, kind=k) for k in kinds])

    count = _with_store(_settings(data_dir=data_dir), work)
    if count == 0:
        raise click.ClickException(f"no live key matched for tenant {name!r}")
    console.print(f"revoked {count} key(s) of tenant {name!r}")


@main.command()
@data_dir_option
def process(data_dir: Path | None) -> None:
    """Run trace processing alone, in the foreground (tierscope up runs it by default).

    It runs one process per shard (TIERSCOPE_PROCESSING_SHARDS). Any number may
    run against one store: one works per shard at a time, the others wait to
    take over.
    """
    from tierscope.collector.server import ProcessorProcesses, migrate, store_dsn

    settings = _settings(data_dir=data_dir)
    logging.getLogger().setLevel(settings.log_level.upper())
    with _store_errors(), store_dsn(settings, console) as dsn:
        asyncio.run(migrate(dsn, console))
        os.environ["TIERSCOPE_DATABASE_URL"] = dsn  # the shard processes read the environment
        console.print(f"processing traces in {settings.processing_shards} shard(s); Ctrl-C stops")
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            with ProcessorProcesses(enabled=True, shards=settings.processing_shards):
                while not stop.wait(0.5):
                    pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)


@main.group()
def bt() -> None:
    """Business transactions: naming rules and what is known."""


tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")


@bt.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@data_dir_option
def bt_apply(file: Path, tenant: str, data_dir: Path | None) -> None:
    """Check FILE (YAML naming rules) and make it the tenant's rules."""
    from tierscope.processing.naming import RuleError, Rules
    from tierscope.store import processing as processing_store

    try:
        rules = Rules.parse(file.read_text(), source=str(file))
    except RuleError as exc:
        raise click.ClickException(f"{file} has problems; nothing was applied:\n{exc}") from None
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file} is not UTF-8 text: {exc}") from None

    async def work(conn: psycopg.AsyncConnection) -> int:
        tenant_id = await _tenant_id(conn, tenant)
        await processing_store.save_rules(conn, tenant_id, rules.to_document(), str(file))
        return len(rules.describe())

    count = _with_store(_settings(data_dir=data_dir), work)
    console.print(f"applied {count} rule(s) from {file} to tenant {tenant!r}; new traces are named by them")


@bt.command("list")
@tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def bt_list(tenant: str, as_json: bool, data_dir: Path | None) -> None:
    """Show the tenant's naming rules and its known business transactions."""
    from tierscope.processing.naming import Rules
    from tierscope.store import processing as processing_store

    async def work(conn: psycopg.AsyncConnection) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
        tenant_id = await _tenant_id(conn, tenant)
        document = await processing_store.load_rules(conn, tenant_id)
        rules = Rules.from_document(document) if document else Rules.default()
        cur = await conn.execute(
            "SELECT service, name, first_seen, overflow FROM business_transactions "
            "WHERE tenant_id = %s ORDER BY service, name",
            (tenant_id,),
        )
        return rules.describe(), list(await cur.fetchall())

    described, known = _with_store(_settings(data_dir=data_dir), work)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "rules": described,
                    "transactions": [
                        {"service": s, "bt": n, "first_seen": str(f), "overflow": o} for s, n, f, o in known
                    ],
                }
            )
        )
        return
    rules_table = Table("#", "name", "match", "apdex T (ms)", title=f"naming rules of {tenant}")
    for rule in described:
        rules_table.add_row(
            str(rule["index"]), str(rule["name"]), str(rule["match"]), str(rule["apdex_t_ms"])
        )
    out.print(rules_table if described else f"tenant {tenant!r} has no naming rules: default names apply")
    known_table = Table("service", "business transaction", "first seen", "sent to _other")
    for service, name, first_seen, overflow in known:
        known_table.add_row(service, name, f"{first_seen:%Y-%m-%d %H:%M}", str(overflow) if overflow else "")
    out.print(known_table)


async def _tenant_id(conn: psycopg.AsyncConnection, name: str) -> int:
    cur = await conn.execute("SELECT id FROM tenants WHERE name = %s", (name,))
    row = await cur.fetchone()
    if row is None:
        raise click.ClickException(f"no tenant named {name!r} (see tierscope tenant list)")
    return int(row[0])


from tierscope.cli import alerts as _alerts  # noqa: E402, F401 - registers `tierscope alerts` (cli/alerts.py)
from tierscope.cli import dashboards as _dashboards  # noqa: E402, F401 - registers `tierscope dashboards`
from tierscope.cli import demo as _demo  # noqa: E402, F401 - registers `tierscope demo` (cli/demo.py)
from tierscope.cli import rum as _rum  # noqa: E402, F401 - registers `tierscope rum` (cli/rum.py)
from tierscope.cli import slo as _slo  # noqa: E402, F401 - registers `tierscope slo` (cli/slo.py)
