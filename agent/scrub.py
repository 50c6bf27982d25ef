"""Scrubbing: what must not leave the process is removed while spans are encoded.

- SQL: string, dollar-quoted and numeric literals become ``?``; comments go.
- URLs: credentials (``user:pass@``) and the values of sensitive query
  parameters (``token``, ``password``, ``sig``, ``X-Amz-Signature``, ...) become
  ``REDACTED``, in URL attributes and wherever a URL appears inside any other
  value, span name, event or status description (an ``HTTPError`` message
  quoting the URL, a connection error quoting the DSN).
- SQL quoted in error texts (exception messages and stack traces, status
  descriptions): the statement after psycopg's ``LINE n:``, SQLAlchemy's
  ``[SQL: ...]`` and ``[parameters: ...]``, lines from an upper-case statement
  keyword on, and the row values of PostgreSQL's ``DETAIL:  Key (...)=(...)``
  and ``Failing row contains (...)`` get their literals replaced by ``?``.
- Headers: ``http.request.header.*`` / ``http.response.header.*`` attributes
  are dropped unless the header is on the allow-list.
- E-mail addresses and phone numbers in attribute values, event attributes and
  span names are masked.

Names that business-transaction naming needs (routes, RPC methods, model names,
SQL keywords and tables) are kept. The encoder remembers the scrubbed form of
values it has seen, so the regular expressions run once per distinct value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
MASKED_EMAIL = "REDACTED_EMAIL"
MASKED_PHONE = "REDACTED_PHONE"

SQL_KEYS = frozenset({"db.statement", "db.query.text"})
# Error texts that may quote a statement, its parameters or a row.
ERROR_KEYS = frozenset({"exception.message", "exception.stacktrace", "error.message"})
URL_KEYS = frozenset({"url.full", "http.url", "url.query", "http.target", "url.original"})
HEADER_PREFIXES = ("http.request.header.", "http.response.header.")

_SQL_TOKENS = re.compile(
    r"""
    (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?(?:\$(?P=tag)\$|\Z))  # $$ ... $$, $fn$ ... $fn$
    # E'..' (a backslash escapes), 'text' and B'', X'', N'', U&'' (it does not:
    # 'a\' ends there), unterminated ones up to the end.
   |(?P<string>[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)
       |(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z))
   |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
   |(?P<keep>"(?:[^"]|"")*"                                                 # "quoted identifier"
       |[A-Za-z_][A-Za-z_0-9$]*                                             # names keep their digits
       |\$\d+|%\(\w+\)s|%s|:\w+)                                            # placeholders
   |(?P<number>(?:\b0[xX][0-9a-fA-F]+|\b\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    """,
    re.S | re.X,
)


def scrub_sql(statement: str) -> str:
    """The statement with every literal replaced by ``?`` and comments removed."""

    def replace(match: re.Match[str]) -> str:
        if match.lastgroup == "keep" or match.group("keep") is not None:
            return match.group(0)
        if match.group("comment") is not None:
            return ""
        return "?"

    return _SQL_TOKENS.sub(replace, statement)


# user:password@ after any scheme, anywhere in a value; up to the last @ of the
# authority, so a password holding an @ goes whole.
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]*(?:@[^/?#@\s]*)*@")
_PARAM = re.compile(r"(^|[?&;])([^&=#;?]+)=([^&#;]*)")
# A query parameter inside prose: its value ends at white space or a quote.
_TEXT_PARAM = re.compile(r"([?&;#])([^&=#;?\s'\"<>]+)=([^&#;\s'\"<>]*)")

# Where an error text quotes SQL (see the module's docstring).
_SQL_HINT = re.compile(
    r"LINE \d+:|\[SQL: |\[parameters: |QUERY: |Key \(|Failing row contains"
    r"|\b(?:SELECT|INSERT|UPDATE|DELETE|WITH|VALUES|CALL)\b"
)
_SQL_START = re.compile(
    r"(?P<marker>LINE \d+: ?|QUERY: ?|STATEMENT: ?|\[SQL: ?|\[parameters: ?)"
    r"|\b(?=(?:SELECT|INSERT|UPDATE|DELETE|WITH|VALUES|CALL)\b)"
)
_ROW = re.compile(r"(Key \(.*?\)=|Failing row contains )\(.*\)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?<![\w.+])(?:\+\d{1,3}[\s.\-]?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){1,4}"
    r"|\(?\b\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4})(?![\w.])"
)


class Scrubber:
    """The scrubbing rules of one agent configuration.

    Args:
        sensitive_params: query parameter names whose values are redacted (any case).
        mask: what to mask in values: a subset of {"email", "phone"}.
        capture_headers: header names that may be sent; all others are dropped.
    """

    def __init__(
        self,
        sensitive_params: Iterable[str],
        mask: Iterable[str] = ("email", "phone"),
        capture_headers: Iterable[str] = (),
    ) -> None:
        self._sensitive = frozenset(name.lower() for name in sensitive_params)
        mask = frozenset(mask)
        self._emails = "email" in mask
        self._phones = "phone" in mask
        self._headers = frozenset(name.lower().replace("-", "_") for name in capture_headers)

    def keeps(self, key: str) -> bool:
        """Whether an attribute may leave the process at all (header allow-list)."""
        if key.startswith(HEADER_PREFIXES):
            name = key.split(".", 3)[3] if key.count(".") >= 3 else ""
            return name.lower().replace("-", "_") in self._headers
        return True

    def url(self, text: str) -> str:
        """Credentials and sensitive query parameter values become REDACTED."""
        text = _USERINFO.sub(_redact_userinfo, text)
        if "=" not in text:
            return text

        def param(match: re.Match[str]) -> str:
            name = match.group(2)
            if unquote_plus(name).strip().lower() in self._sensitive:
                return f"{match.group(1)}{name}={REDACTED}"
            return match.group(0)

        head, hash_mark, fragment = text.partition("#")
        return _PARAM.sub(param, head) + hash_mark + (_PARAM.sub(param, fragment) if fragment else "")

    def text(self, text: str) -> str:
        """Prose that may quote URLs: their credentials and sensitive parameters redacted."""
        if "@" in text and "://" in text:
            text = _USERINFO.sub(_redact_userinfo, text)
        if "=" in text:

            def param(match: re.Match[str]) -> str:
                name = match.group(2)
                if unquote_plus(name).strip().lower() in self._sensitive:
                    return f"{match.group(1)}{name}={REDACTED}"
                return match.group(0)

            text = _TEXT_PARAM.sub(param, text)
        return text

    def error(self, text: str) -> str:
        """An error text (exception message, stack trace, status description), scrubbed."""
        return self.mask(scrub_sql_in_text(self.text(text)))

    def mask(self, text: str) -> str:
        """E-mail addresses and phone numbers masked, as configured."""
        if self._emails and "@" in text:
            text = _EMAIL.sub(MASKED_EMAIL, text)
        if self._phones and _has_digits(text):
            text = _PHONE.sub(MASKED_PHONE, text)
        return text

    def value(self, key: str, text: str) -> str:
        """The scrubbed form of one string attribute value."""
        if key in SQL_KEYS:
            return scrub_sql(text)  # literals gone: what is left is keywords and names
        if key in URL_KEYS:
            text = self.url(text)
        elif key in ERROR_KEYS:
            return self.error(text)
        else:
            text = self.text(text)
        return self.mask(text)


def _redact_userinfo(match: re.Match[str]) -> str:
    return f"{match.group(1)}{REDACTED}:{REDACTED}@"


def scrub_sql_in_text(text: str) -> str:
    """The literals of SQL quoted in an error text replaced by ``?``; the prose kept."""
    if _SQL_HINT.search(text) is None:
        return text
    lines = text.split("\n")
    in_block = False  # inside a multi-line ``[SQL: ...]``
    for number, line in enumerate(lines):
        if in_block:
            if line.startswith(("[parameters:", "(Background on this error")):
                in_block = False
            else:
                in_block = not line.rstrip().endswith("]")
                lines[number] = scrub_sql(line)
                continue
        start = _SQL_START.search(line)
        if start is not None:
            at = start.end()
            lines[number] = line[:at] + scrub_sql(line[at:])
            in_block = (start.group("marker") or "").startswith("[SQL:") and not line.rstrip().endswith("]")
        elif "Key (" in line or "Failing row contains" in line:
            lines[number] = _ROW.sub(r"\1(?)", line)
    return "\n".join(lines)


def _has_digits(text: str) -> bool:
    # Cheap pre-check before the phone pattern: it needs at least seven digits.
    count = 0
    for char in text:
        if "0" <= char <= "9":
            count += 1
            if count >= 7:
                return True
    return False
