"""YAML read with the line of every field, checked by pydantic models.

Hand-written files deserve messages that point at the line to fix:
:func:`plain` turns a YAML node tree into plain values while noting where
each field was written, and :func:`problems_of` turns a pydantic
``ValidationError`` into ``FILE:LINE: field: message`` problems using those
lines. A model's own check that concerns one field names it as a prefix of
its message (``"duration: ..."``), and the problem is placed on that field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

_FIELD_PREFIX = re.compile(r"^([a-zA-Z]+): ")
Lines = dict[tuple[Any, ...], int]


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.message}"


class DefinitionError(ValueError):
    """Definitions tierscope cannot use: one line per problem, ``FILE:LINE: field: message``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.source, p.line))
        super().__init__("\n".join(str(p) for p in self.problems))


def compose(text: str, source: str) -> list[yaml.Node | None]:
    """The YAML documents of ``text``, or a :class:`DefinitionError` naming the line."""
    try:
        return list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DefinitionError([Problem(source, line, "document", f"invalid YAML: {reason}")]) from None


def plain(node: yaml.Node, path: tuple[Any, ...], lines: Lines) -> Any:
    """The node's value, noting the line of every field on the way."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            result[key] = plain(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1  # a field's line is its key's
        return result
    if isinstance(node, yaml.SequenceNode):
        items = [plain(item, (*path, index), lines) for index, item in enumerate(node.value)]
        if len(items) == 1:  # OpenSLO's one-window list is read as the window: its fields' lines too
            inner = {
                (*path, *key[len(path) + 1 :]): line
                for key, line in lines.items()
                if key[: len(path) + 1] == (*path, 0)
            }
            for key, line in inner.items():
                lines.setdefault(key, line)
        return items
    return yaml.constructor.SafeConstructor().construct_object(node)


def line_of(loc: tuple[Any, ...], lines: Lines) -> int:
    for end in range(len(loc), -1, -1):  # a missing field: the line of its parent
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _field_name(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "document"


def problems_of(exc: ValidationError, lines: Lines, source: str) -> list[Problem]:
    problems = []
    for error in exc.errors():
        # A Literal field reports itself, a model validator reports its model: strip pydantic's
        # own markers ("function-after[...]", the tag of a union) to keep the document's path.
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field; check its spelling (fields are case-sensitive)"
        elif error["type"] == "missing":
            message = "is required"
        if field := _FIELD_PREFIX.match(message):  # a model's check naming one of its fields
            loc, message = (*loc, field[1]), message[field.end() :]
        problems.append(Problem(source, line_of(loc, lines), _field_name(loc), message))
    return problems
