"""Business-transaction (BT) names for traces: per-tenant rules, else a safe default.

A BT is what the people running an application think in ("ERP / Post invoice"), not
what instrumentation emits ("POST /web/dataset/call_kw"). Every rollup is keyed by
it, so a name must never carry a record id (one BT per invoice would explode the
rollups): names built from traffic go through :func:`collapse_ids`, and a service
with too many BTs still gets :data:`OTHER` elsewhere (``max_per_service``).

Rules are hand-written YAML, tried in order, first match wins. A mistake must not
misname traffic for weeks, so :meth:`Rules.parse` reports every problem at once,
each with its line and field. Without a match the name follows OpenTelemetry
semantic conventions: RPC method, else HTTP route, else URL path, else span name.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml

OTHER = "_other"
NAME_LIMIT = 200
DEFAULT_APDEX_T_MS = 500.0
DEFAULT_MAX_PER_SERVICE = 500
MAX_PER_SERVICE_LIMIT = 100_000
DOCUMENT_VERSION = 1

_TOP_KEYS = ("transactions", "settings")
_SETTINGS_KEYS = ("apdex_t", "max_per_service")
_RULE_KEYS = ("name", "exclude", "service", "method", "route", "path", "attributes", "apdex_t")
_CONDITIONS = ("service", "method", "route", "path", "attributes")
_FIELDS = ("method", "route", "path", "service", "span")
_MISSING = "\ue000"  # stands in for "?" while ids are collapsed, which drops "?" onward

_SEPARATOR = re.compile(r"(/|\s+)")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_ID_SHAPES = [  # tried in order on words that are not all digits
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "{uuid}"),
    (re.compile(r"(?=.*[0-9])[0-9a-fA-F]{16,}"), "{hash}"),
    (re.compile(r"[^@\s/]+@[^@\s/]+\.[^@\s/]+"), "{email}"),
    (re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_-]{24,}"), "{token}"),
]
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_GLOB_CLASS = re.compile(r"\[!?\]?[^\]]*\]")
_METHOD = re.compile(r"[A-Za-z_-]+")
_APDEX = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", re.IGNORECASE)
_NULL, _BOOL = "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_YAML_HINT = "check the indentation, and quote values containing ': ' or ' #' or starting with { [ * & ! |"


@dataclass(frozen=True)
class EntrySpan:
    service: str
    name: str  # span name
    kind: int  # OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Naming:
    bt: str | None  # None when the trace is excluded by a rule
    apdex_t_ms: float
    rule: int | None  # index of the matching rule, None for the default name


class Problem(NamedTuple):
    line: int
    path: str
    message: str


class RuleError(ValueError):
    """Rules tierscope cannot use: one line per problem, ``SOURCE:LINE: field: what to do``."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda problem: problem.line)
        super().__init__("\n".join(f"{source}:{p.line}: {p.path}: {p.message}" for p in self.problems))


# -- ids ---------------------------------------------------------------------


def _collapse_word(word: str) -> str:
    if not word or _PLACEHOLDER.fullmatch(word):
        return word  # a template segment such as {id} in a route is already safe
    digits = len(re.findall(r"\d", word))
    if digits == len(word):
        return "{id}"
    for pattern, replacement in _ID_SHAPES:
        if pattern.fullmatch(word):
            return replacement
    # Invoice numbers, order codes, dates: three digits are already too many for a name.
    return "{id}" if digits >= 3 else word


def collapse_ids(text: str) -> str:
    """Replace the ids in a path or span name (``/orders/42`` -> ``/orders/{id}``); drop any query."""
    parts = _SEPARATOR.split(text.split("?", 1)[0])
    return "".join(part if index % 2 else _collapse_word(part) for index, part in enumerate(parts))


# -- what an entry span says -------------------------------------------------


def _attr(attributes: Mapping[str, Any], key: str) -> str | None:
    # Booleans read as in JSON and YAML; an empty value names nothing, so it counts as missing.
    value = attributes.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    return (str(value) or None) if value is not None else None


def _url_path(url: str) -> str | None:
    if url.startswith("/"):
        return url.split("?", 1)[0].split("#", 1)[0]
    try:
        return urlsplit(url).path or "/"
    except ValueError:  # e.g. a malformed IPv6 host: no path rather than no trace
        return None


@dataclass(frozen=True, slots=True)
class _Facts:
    """The values rules match and templates render, read once per entry span."""

    entry: EntrySpan
    method: str | None
    route: str | None
    path: str | None

    @classmethod
    def of(cls, entry: EntrySpan) -> _Facts:
        attributes = entry.attributes
        method = _attr(attributes, "http.request.method") or _attr(attributes, "http.method")
        path = _attr(attributes, "url.path")
        if path is None and (target := _attr(attributes, "http.target")):
            path = _url_path(target)
        if path is None and (url := _attr(attributes, "url.full") or _attr(attributes, "http.url")):
            path = _url_path(url)
        return cls(entry, method and method.upper(), _attr(attributes, "http.route"), path or None)

    def field(self, name: str, key: str | None = None) -> str | None:
        if name == "attr":
            return _attr(self.entry.attributes, key or "")
        if name in ("service", "span"):
            return (self.entry.service if name == "service" else self.entry.name) or None
        return getattr(self, name)


def _finish(name: str) -> str:
    name = " ".join(name.split())[:NAME_LIMIT].strip()
    return name or "unnamed"


def _default_name(facts: _Facts) -> str:
    if rpc_method := facts.field("attr", "rpc.method"):
        service = facts.field("attr", "rpc.service")
        return _finish(f"{service}/{rpc_method}" if service else f"RPC {rpc_method}")
    method = f"{facts.method} " if facts.method else ""
    if facts.route:
        return _finish(method + facts.route)
    if facts.path:
        return _finish(method + collapse_ids(facts.path))
    return _finish(collapse_ids(facts.entry.name))


def default_name(entry: EntrySpan) -> str:
    """The BT name when no rule matches: RPC method, HTTP route, URL path, span name."""
    return _default_name(_Facts.of(entry))


# -- rules -------------------------------------------------------------------


def _matcher(condition: str, pattern: str) -> Callable[[str], bool]:
    if pattern.startswith("re:"):
        source = pattern[3:]
    elif condition == "route" and "*" not in pattern and "?" not in pattern:
        source = re.escape(pattern)  # a route is a template: {id} and [..] are literal
    else:
        source = fnmatch.translate(pattern)
    regex = re.compile(source)
    return lambda text: regex.fullmatch(text) is not None


Part = str | tuple[str, str | None]


def _template(text: str) -> tuple[list[Part], list[str]]:
    """The literal text and fields of a name template, and what is wrong with it."""
    parts: list[Part] = []
    problems: list[str] = []
    position = 0
    for match in _TEMPLATE_TOKEN.finditer(text):
        parts.append(text[position : match.start()])
        position = match.end()
        token, inside = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif inside is None:
            problems.append(f"unbalanced {token!r} in the name; write {{{{ or }}}} for a literal brace")
        elif inside.startswith("attr:") and inside[5:].strip():
            parts.append(("attr", inside[5:].strip()))
        elif inside in _FIELDS:
            parts.append((inside, None))
        else:
            problems.append(
                f"unknown template field {{{inside}}}; use {{method}}, {{route}}, {{path}}, {{service}}, "
                "{span} or {attr:<attribute key>} (write {{ and }} for literal braces)"
            )
    parts.append(text[position:])
    return [part for part in parts if part], problems


class _Rule:
    """One checked rule: its normalised document, compiled conditions and name template."""

    __slots__ = ("apdex_t_ms", "conditions", "document", "name", "parts")

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document  # as in the YAML, normalised; exclude rules carry exclude: True
        self.name: str | None = document.get("name")
        self.apdex_t_ms: float | None = document.get("apdex_t")
        self.parts = _template(self.name)[0] if self.name is not None else []
        wanted = [(key, None, document[key]) for key in _CONDITIONS[:4] if key in document]
        wanted += [("attr", key, pattern) for key, pattern in document.get("attributes", {}).items()]
        self.conditions = [(field, key, pattern, _matcher(field, pattern)) for field, key, pattern in wanted]

    def matches(self, facts: _Facts) -> bool:
        for field, key, _, matcher in self.conditions:
            value = facts.field(field, key)
            if value is None or not matcher(value):  # a condition on a missing value fails
                return False
        return True

    def render(self, facts: _Facts) -> str | None:
        """The BT name, or None when an ``{attr:X}`` is missing: the rule then does not match."""
        out = []
        for part in self.parts:
            value = part if isinstance(part, str) else facts.field(*part)
            if value is None and part[0] == "attr":
                return None
            out.append(_MISSING if value is None else value)
        return _finish(collapse_ids("".join(out)).replace(_MISSING, "?"))

    def describe(self) -> str:
        return ", ".join(f"{f if k is None else f'attr:{k}'}={p}" for f, k, p, _ in self.conditions)


class Rules:
    """A tenant's naming rules, checked and compiled: :meth:`name` runs for every trace."""

    __slots__ = ("_rules", "default_apdex_t_ms", "max_per_service")

    def __init__(
        self,
        rules: tuple[_Rule, ...] = (),
        *,
        default_apdex_t_ms: float = DEFAULT_APDEX_T_MS,
        max_per_service: int = DEFAULT_MAX_PER_SERVICE,
    ) -> None:
        self._rules = rules
        self.default_apdex_t_ms = default_apdex_t_ms
        self.max_per_service = max_per_service

    @classmethod
    def default(cls) -> Rules:
        return cls()

    @classmethod
    def parse(cls, text: str, source: str = "<rules>") -> Rules:
        """Read rules YAML. Raises :class:`RuleError` listing every problem found."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise RuleError(source, [_syntax_problem(exc, text)]) from None
        if root is None:  # an empty or all-comment file: no rules yet
            return cls()
        checker = _Checker()
        rules = checker.document(root)
        if checker.problems:
            raise RuleError(source, checker.problems)
        return cls(tuple(rules), **checker.settings)

    def to_document(self) -> dict[str, Any]:
        """JSON-ready rules in the YAML format's own shape, for the ``bt_rules`` table."""
        return {
            "version": DOCUMENT_VERSION,
            "transactions": [copy.deepcopy(rule.document) for rule in self._rules],
            "settings": {"apdex_t": self.default_apdex_t_ms, "max_per_service": self.max_per_service},
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Rules:
        """Rules from :meth:`to_document` output, checked again as if parsed from YAML."""
        if not isinstance(document, dict) or document.get("version") != DOCUMENT_VERSION:
            message = f"expected a rules document of version {DOCUMENT_VERSION}, as written by to_document"
            raise RuleError("<document>", [Problem(1, "version", message)])
        # Back through parse, so there is one validator: a stored document edited by
        # hand, or written by an older tierscope, is checked like a file.
        body = {key: value for key, value in document.items() if key != "version"}
        return cls.parse(yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=2**31), "<document>")

    def name(self, entry: EntrySpan) -> Naming:
        facts = _Facts.of(entry)
        for index, rule in enumerate(self._rules):
            if not rule.matches(facts):
                continue
            if rule.name is None:
                return Naming(None, self.default_apdex_t_ms, index)
            if (bt := rule.render(facts)) is not None:
                return Naming(bt, rule.apdex_t_ms or self.default_apdex_t_ms, index)
        return Naming(_default_name(facts), self.default_apdex_t_ms, None)

    def describe(self) -> list[dict[str, Any]]:
        """One row per rule for ``tierscope bt`` tables; apdex_t_ms is None for exclusions."""
        return [
            {
                "index": index,
                "name": "exclude" if rule.name is None else rule.name,
                "match": rule.describe(),
                "apdex_t_ms": None if rule.name is None else rule.apdex_t_ms or self.default_apdex_t_ms,
            }
            for index, rule in enumerate(self._rules)
        ]


# -- checking ----------------------------------------------------------------


def _syntax_problem(exc: yaml.YAMLError, text: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    position = getattr(exc, "position", 0)  # a ReaderError (a forbidden character) has no mark
    line = mark.line + 1 if mark is not None else text.count("\n", 0, position) + 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and start.line + 1 != line:  # e.g. an unclosed [ found at the end
        problem += f" ({context} started on line {start.line + 1})"
    return Problem(line, "document", f"invalid YAML: {problem}; {_YAML_HINT}")


def _describe_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return "nothing" if node.tag == _NULL else repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _pattern_problems(condition: str, pattern: str) -> list[str]:
    if condition == "method":
        return [] if _METHOD.fullmatch(pattern) else ["expected an HTTP method such as GET or POST"]
    if condition == "name":
        return _template(pattern)[1]
    if pattern.startswith("re:"):
        if condition not in ("path", "attributes"):
            return [
                "re: (a regular expression) is allowed in path and attributes only; use a glob with * or ?"
            ]
        try:
            re.compile(pattern[3:] or "(?!)")  # empty: match nothing, and say so below
        except re.error as exc:
            return [f"invalid regular expression: {exc.msg} at position {exc.pos}; escape specials with \\"]
        return [] if pattern[3:] else ["re: needs a regular expression after it, e.g. re:/orders/[0-9]+"]
    if condition == "route" and "*" not in pattern and "?" not in pattern:
        return []  # an exact route: brackets are literal
    if "[" in _GLOB_CLASS.sub("", pattern):  # fnmatch would silently read it as a literal [
        return ["the glob has an unclosed [; write [[] to match a literal ["]
    return []


class _Checker:
    """Walks the YAML node tree, which knows its lines, noting every problem on the way."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.settings: dict[str, Any] = {}

    def add(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, path or "document", message))

    def mapping(self, node: yaml.Node, path: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            got = _describe_node(node)
            self.add(node, path, f"expected a mapping with keys {', '.join(allowed)}; got {got}")
            return None
        found: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            close = difflib.get_close_matches(key, allowed, n=1)
            if key in found:
                self.add(key_node, _join(path, key), "duplicate key; keep one of them")
            elif key not in allowed:
                hint = f"did you mean {close[0]}? " if close else ""
                self.add(key_node, _join(path, key), f"unknown key; {hint}allowed keys: {', '.join(allowed)}")
            else:
                found[key] = value_node
        return found

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return yaml.constructor.SafeConstructor().construct_object(node)
        except yaml.YAMLError:
            return None

    def text(self, node: yaml.Node, path: str) -> str | None:
        # The scalar as written: YAML 1.1 reads `service: no` as False and `route: 0755` as 493.
        if not isinstance(node, yaml.ScalarNode):
            self.add(node, path, f"expected text; got {_describe_node(node)}")
        elif node.tag == _NULL or not node.value.strip():
            self.add(node, path, "is empty; give a value or remove the key")
        else:
            return str(node.value)
        return None

    def apdex(self, node: yaml.Node, path: str) -> float | None:
        value = self.scalar(node) if isinstance(node, yaml.ScalarNode) else None
        ms = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        if isinstance(value, str) and (match := _APDEX.fullmatch(value)):
            ms = float(match[1]) * (1000 if (match[2] or "ms").lower() == "s" else 1)
        if ms is None or not math.isfinite(ms) or ms <= 0:
            got = _describe_node(node)
            self.add(
                node, path, f"expected a positive duration such as 800ms or 2s (a number is ms); got {got}"
            )
        return ms

    def document(self, root: yaml.Node) -> list[_Rule]:
        top = self.mapping(root, "", _TOP_KEYS) or {}
        if (node := top.get("settings")) is not None and node.tag != _NULL:
            fields = self.mapping(node, "settings", _SETTINGS_KEYS) or {}
            if "apdex_t" in fields:
                self.settings["default_apdex_t_ms"] = self.apdex(fields["apdex_t"], "settings.apdex_t")
            if (node := fields.get("max_per_service")) is not None:
                value = self.settings["max_per_service"] = self.scalar(node)
                if type(value) is not int or not 1 <= value <= MAX_PER_SERVICE_LIMIT:
                    got = _describe_node(node)
                    self.add(
                        node,
                        "settings.max_per_service",
                        f"expected a whole number from 1 to 100000; got {got}",
                    )
        node = top.get("transactions")
        if node is None or node.tag == _NULL:  # `transactions:` with every rule commented out
            return []
        if not isinstance(node, yaml.SequenceNode):
            message = f"expected a list of rules, each starting with '- '; got {_describe_node(node)}"
            self.add(node, "transactions", message)
            return []
        rules = [self.rule(item, f"transactions[{index}]") for index, item in enumerate(node.value)]
        return [rule for rule in rules if rule is not None]

    def rule(self, node: yaml.Node, path: str) -> _Rule | None:
        before = len(self.problems)
        fields = self.mapping(node, path, _RULE_KEYS)
        if fields is None:
            return None
        document: dict[str, Any] = {}
        for key, value in fields.items():
            where = _join(path, key)
            if key == "attributes":
                document[key] = self.attributes(value, where)
            elif key == "apdex_t":
                document[key] = self.apdex(value, where)
            elif key == "exclude":
                if value.tag != _BOOL:
                    self.add(value, where, "expected true or false")
                elif self.scalar(value):
                    document[key] = True
            elif (text := self.text(value, where)) is not None:
                for problem in _pattern_problems(key, text):
                    self.add(value, where, problem)
                document[key] = text.upper() if key == "method" else text
        if not any(key in fields for key in _CONDITIONS):
            message = "the rule has no condition, so it would match every trace; add one of "
            self.add(node, path, message + ", ".join(_CONDITIONS))
        bad_exclude = "exclude" in fields and fields["exclude"].tag != _BOOL  # reported above
        if "exclude" in document and "name" in fields:
            self.add(
                node, path, "a rule names traces (name) or drops them (exclude: true), not both; remove one"
            )
        elif "exclude" not in document and "name" not in fields and not bad_exclude:
            self.add(node, path, "the rule needs a name (the BT name template) or exclude: true")
        elif "exclude" in document and "apdex_t" in fields:
            self.add(fields["apdex_t"], f"{path}.apdex_t", "an excluded trace has no Apdex; remove apdex_t")
        return _Rule(document) if len(self.problems) == before else None

    def attributes(self, node: yaml.Node, path: str) -> dict[str, str]:
        patterns: dict[str, str] = {}
        if not isinstance(node, yaml.MappingNode) or not node.value:
            got = "an empty mapping" if isinstance(node, yaml.MappingNode) else _describe_node(node)
            self.add(node, path, f'expected attribute keys and globs, e.g. rpc.method: "sale.*"; got {got}')
        for key_node, value_node in node.value if isinstance(node, yaml.MappingNode) else ():
            key = str(key_node.value).strip() if isinstance(key_node, yaml.ScalarNode) else ""
            where = _join(path, key or "?")
            if not key or key in patterns:
                self.add(key_node, where, "expected a distinct attribute key")
            elif value_node.tag == _BOOL:  # compared with span booleans read as true/false
                patterns[key] = "true" if self.scalar(value_node) else "false"
            elif (pattern := self.text(value_node, where)) is not None:
                for problem in _pattern_problems("attributes", pattern):
                    self.add(value_node, where, problem)
                patterns[key] = pattern
        return patterns
