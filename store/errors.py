"""The store's exceptions: the one place where driver errors become ours.

Callers above the store (the collector, the CLI) never see a psycopg exception.
They need one decision from an error: is the store *unavailable* (down, hung,
saturated: answer 503 and let the client retry) or did it refuse the request
itself (a bug or bad data: retrying will not help).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import psycopg
import psycopg.errors
import psycopg_pool

P = ParamSpec("P")
R = TypeVar("R")


class StoreError(Exception):
    """The store refused an operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is too busy right now; retrying later may work."""


class NotFound(StoreError):
    """The row asked for does not exist (or belongs to another tenant)."""


class Conflict(StoreError):
    """The operation would break a uniqueness rule (e.g. a tenant name taken)."""


# SQLSTATE classes that mean "the store, not the request, has a problem".
_TRANSIENT = (
    psycopg.OperationalError,  # connection refused/lost, admin shutdown, ...
    psycopg.errors.QueryCanceled,  # statement_timeout
    psycopg.errors.LockNotAvailable,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.InsufficientResources,  # disk full, out of memory
    psycopg.errors.CannotConnectNow,
    psycopg_pool.PoolTimeout,
    psycopg_pool.TooManyRequests,
)


def translate(exc: BaseException) -> StoreError:
    """Map a driver or pool exception to the store's own."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailable(f"store unavailable: {_one_line(exc)}")
    if isinstance(exc, psycopg.errors.UniqueViolation):
        constraint = exc.diag.constraint_name or "a unique constraint"
        return Conflict(f"already exists ({constraint})")
    return StoreError(f"store error: {_one_line(exc)}")


def wrap_errors(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Decorate an async store function so it raises only :class:`StoreError`."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests) as exc:
            raise translate(exc) from exc

    return wrapper


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
