"""Named SQL queries, kept in ``sql/queries.sql``.

Each query sits under a ``-- name --`` header followed by a one-line comment
saying what it does, and takes ``%(param)s`` placeholders. They are parsed once
into :data:`QUERIES`. The file is ours and ships with the package, so its
queries are as trusted as code (they are ``LiteralString`` for the type checker).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, LiteralString]:
    """Split a queries file into ``{name: sql}``; a repeated name is an error."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql: query {name!r} is defined twice")
        queries[name] = cast(LiteralString, body.strip())
    return queries


QUERIES = parse(resources.files("tierscope.store").joinpath("sql/queries.sql").read_text())
