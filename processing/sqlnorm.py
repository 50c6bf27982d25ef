"""SQL statements with their literal values taken out, so equal statements group together.

Dashboards show the "top statements" of a business transaction. ``WHERE id = 42``
and ``WHERE id = 43`` are the same statement run twice, so every literal value
becomes ``?`` and lists of values collapse to one. The values also have to go for
a second reason: they are customers' data (names, e-mail addresses, amounts) and
must not be stored with the span.

Everything else is kept as it was written: keywords keep their case, names keep
their digits (``table2``, ``"t 1"``: double quotes delimit names, not values),
bind placeholders (``$1``, ``%s``, ``:name``, ``:1``, ``?``) are no values and
stay, and so do ``TRUE``, ``FALSE`` and ``NULL``, which change what a statement
does. Comments go and whitespace runs become one space. ``IN (...)`` and
``ARRAY[...]`` lists of values become ``(?)`` and ``[?]``, and the rows of
``VALUES`` its first row.

Cost matters: this runs for every database span. One compiled regular expression
finds, in a single left-to-right pass, only what has to change or must be
skipped over (literals, comments, odd whitespace, quoted names); the text between
its matches is copied by the regex engine without Python seeing it. A second,
cheap pass collapses the lists. :class:`Normalizer` adds a bounded cache, since a
service sends the same few hundred statements over and over.

The scanner is forgiving: statements are often cut short by the SDK, so an
unterminated string or comment runs to the end and becomes ``?`` or nothing.
It does not know the dialect: a MySQL string with a backslash-escaped quote
(``'it\\'s'``) is read the standard way, and ``"..."`` is always a name.
"""

from __future__ import annotations

import re
from collections import OrderedDict

MAX_LENGTH = 1024

# Statements longer than this are normalized but not cached: long ones are mostly
# unique (a list of thousands of ids), and the cache's memory should stay small.
_CACHEABLE_LENGTH = 4 * MAX_LENGTH

_EXPONENT = r"(?:[eE][-+]?\d+)?"
# Letters stuck to a number (1abc, 0x1G, 0$$) go with it: had they stayed, a later
# pass would see them after a ``?`` instead of a digit and read them differently.
_TAIL = r"[\w$]*"
_NUMBER = rf"(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+){_EXPONENT}){_TAIL}"
_COMMENT = r"(?:--[^\n\r]*|/\*.*?(?:\*/|\Z))"  # an unterminated /* runs to the end
_BLANK = rf"(?:\s|{_COMMENT})"

# Every alternative starts with a plain character or class, and what comes before
# the match is checked only after that first character: the regex engine then
# rejects most positions at a glance (this made the scan four times faster than
# lookbehinds up front). The replacement is chosen by the match's first character.
_LEXEME = re.compile(
    rf"""
    "[^"]*(?:""[^"]*)*"                                      # a quoted name: "res.partner", "t 1"
  | `[^`]*`                                                  # a MySQL quoted name
  | \$\d+                                                    # a numbered placeholder: $1
  | [^\S ]{_BLANK}*                                          # whitespace other than one space,
  | [ ]{_BLANK}+                                             #   comments and the whitespace
  | --[^\n\r]*{_BLANK}*                                      #   around them
  | /\*.*?(?:\*/|\Z){_BLANK}*
  | '[^']*(?:''[^']*)*'?                                     # 'it''s'; unterminated: to the end
  | [eE]'(?<![\w$][eE]')[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?      # E'it\'s', not the end of a name
  | [nNbBxX]'(?<![\w$][nNbBxX]')[^']*(?:''[^']*)*'?          # N'...', B'0101', X'ff'
  | [uU]&'(?<![\w$][uU]&')[^']*(?:''[^']*)*'?                # U&'d\0061t\+000061'
  | \$(?<!\w\$)(?P<tag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)  # $$...$$, $fn$...$fn$
  | [-+]\s*{_NUMBER}                                         # a sign: the number's own or a subtraction
  | 0[xX](?<![\w:]0[xX])[0-9a-fA-F]+{_TAIL}                  # a number, not the digits of a name
  | \d(?<![\w:]\d)\d*(?:\.\d*)?{_EXPONENT}{_TAIL}            #   (table2) or of a placeholder (:1)
  | \.\d(?<![\w:]\.\d)\d*{_EXPONENT}{_TAIL}
    """,
    re.VERBOSE | re.DOTALL,
)

# What may come right before a sign that belongs to its number (``= -5``, ``(-5``,
# ``THEN -1``); after anything else (a name, a value, ``)``) the sign subtracts.
_UNARY_AFTER_CHARS = frozenset("(,[=<>!+-*/%^|&~@#:;")
_UNARY_AFTER_WORDS = frozenset(
    {"and", "or", "not", "select", "where", "when", "then", "else", "case", "between", "like", "limit"}
    | {"offset", "having", "distinct", "return", "returning", "values", "in", "is", "by", "all", "any"}
)


def _sign_is_unary(text: str, at: int) -> bool:
    """Whether the sign at ``text[at]`` is part of the number after it rather than a subtraction."""
    end = at - 1
    while end >= 0 and text[end].isspace():
        end -= 1
    if end < 0:
        return True
    char = text[end]
    if char in _UNARY_AFTER_CHARS:
        return True
    if not (char.isalpha() or char == "_"):
        return False  # a value, a quoted name or ')' ends an operand
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return text[start : end + 1].lower() in _UNARY_AFTER_WORDS


def _replace(match: re.Match[str]) -> str:
    text = match[0]
    first = text[0]
    if first == '"' or first == "`" or (first == "$" and text[1].isdecimal()):
        return text  # a name or a placeholder, matched only to be skipped over whole
    if first.isspace() or text[:2] in ("--", "/*"):
        return " "
    if (first == "-" or first == "+") and not _sign_is_unary(match.string, match.start()):
        return first + (" ?" if text[1].isspace() else "?")  # keep the subtraction
    return "?"


# After the first pass every value is ``?`` or a placeholder and whitespace is
# one space. A list of values is one value as far as the statement's shape goes,
# however long it was. Matches start at the bracket, so the scan is quick; the
# keyword before it is checked by looking back.
_VALUE = r"(?:\?|\$\d+|%s|%\(\w+\)s|:\w+)"
_VALUES = rf"[ ]?{_VALUE}(?:[ ]?,[ ]?{_VALUE})*[ ]?"
_ROW_ITEM = rf"(?:{_VALUE}|null|true|false|default)(?:::\w+)?"
_ROW_ITEMS = rf"[ ]?{_ROW_ITEM}(?:[ ]?,[ ]?{_ROW_ITEM})*[ ]?"
_LIST = re.compile(
    rf"""
    \((?:(?<=\bin\()|(?<=\bin[ ]\()){_VALUES}\)                      # IN (?, ?, ?) -> IN (?)
  | \[(?:(?<=\barray\[)|(?<=\barray[ ]\[)){_VALUES}\]                # ARRAY[?, ?] -> ARRAY[?]
  | (?P<row>\((?:(?<=\bvalues\()|(?<=\bvalues[ ]\()){_ROW_ITEMS}\))   # VALUES (?, ?), (?, ?)
    (?:[ ]?,[ ]?\({_ROW_ITEMS}\))+                                   #   -> VALUES (?, ?)
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _collapse(match: re.Match[str]) -> str:
    row = match["row"]
    if row is not None:
        return row  # the first row keeps the column count
    return "(?)" if match[0][0] == "(" else "[?]"


def _pass(statement: str) -> str:
    return _LIST.sub(_collapse, _LEXEME.sub(_replace, statement).strip())


def normalize(statement: str) -> str:
    """The statement with every literal value replaced by ``?``, lists collapsed,
    comments removed and whitespace runs made one space; at most MAX_LENGTH characters."""
    text = _pass(statement)
    if len(text) > MAX_LENGTH:
        # The cut can split a quoted name or a placeholder. Normalizing the cut
        # text once more reads the split tail the way the next call would, so
        # normalize() stays idempotent. A pass never makes text longer.
        text = _pass(text[:MAX_LENGTH])
    return text


class Normalizer:
    """:func:`normalize` with a bounded least-recently-used cache.

    A service sends the same statement text again and again (drivers that bind
    parameters send it word for word), and a hit costs a dictionary lookup
    instead of a scan. The cache holds at most ``cache_size`` statements. Not
    thread-safe: give each worker its own.
    """

    __slots__ = ("_cache", "cache_size", "hits", "misses")

    def __init__(self, cache_size: int = 10_000) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def __call__(self, statement: str) -> str:
        cache = self._cache
        normalized = cache.get(statement)
        if normalized is not None:
            self.hits += 1
            cache.move_to_end(statement)
            return normalized
        self.misses += 1
        normalized = normalize(statement)
        if self.cache_size and len(statement) <= _CACHEABLE_LENGTH:
            cache[statement] = normalized
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return normalized
