"""Normalized SQL statements: literal values out, everything else as written."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierscope.processing.sqlnorm import MAX_LENGTH, Normalizer, normalize

# name: (statement, normalized)
CASES: dict[str, tuple[str, str]] = {
    # Strings
    "A quoted string is a value": (
        "SELECT id FROM res_users WHERE login = 'admin'",
        "SELECT id FROM res_users WHERE login = ?",
    ),
    "A doubled quote is part of its string": (
        "SELECT id FROM res_partner WHERE name = 'O''Brien' AND ref = 'X'",
        "SELECT id FROM res_partner WHERE name = ? AND ref = ?",
    ),
    "An E string may escape its quote with a backslash": (
        r"SELECT id FROM t WHERE a = E'it\'s \\' AND b = 'x'",
        "SELECT id FROM t WHERE a = ? AND b = ?",
    ),
    "Dollar quoting, with and without a tag, is one value": (
        "SELECT $$it's$$, $fn$ a $$ b 'c' $fn$",
        "SELECT ?, ?",
    ),
    "National, bit, hex and Unicode strings are values with their prefix": (
        r"SELECT N'Zoë', B'0101', X'ff', U&'d\0061t'",
        "SELECT ?, ?, ?, ?",
    ),
    "A string that looks like a comment or a number is still one value": (
        "SELECT '-- no', '/* nor */', '42', ''",
        "SELECT ?, ?, ?, ?",
    ),
    # Numbers
    "Integers, decimals and exponents are values": (
        "SELECT 1, 2.5, .5, 3., 1e10, 6.02E+23, 1.5e-3 FROM t",
        "SELECT ?, ?, ?, ?, ?, ?, ? FROM t",
    ),
    "A hexadecimal number is a value": (
        "SELECT id FROM t WHERE flags = 0xFF",
        "SELECT id FROM t WHERE flags = ?",
    ),
    "A negative number after an operator is one value": (
        "SELECT id FROM account_move_line WHERE balance < -100.5 AND debit<>-3",
        "SELECT id FROM account_move_line WHERE balance < ? AND debit<>?",
    ),
    "A negative number after an opening parenthesis or a comma is one value": (
        "SELECT round(-1.5, -2), ( - 3)",
        "SELECT round(?, ?), ( ?)",
    ),
    "A negative number after a keyword is one value": (
        "SELECT CASE WHEN a THEN -1 ELSE -2 END, -3",
        "SELECT CASE WHEN a THEN ? ELSE ? END, ?",
    ),
    "A minus between two operands is a subtraction and stays": (
        "SELECT qty - 1, qty-2, (x) - 3 FROM t",
        "SELECT qty - ?, qty-?, (x) - ? FROM t",
    ),
    "Digits in names are no values": (
        "SELECT col_1, t2.x2 FROM table2 t2 JOIN v1$x ON t2.id = v1$x.id",
        "SELECT col_1, t2.x2 FROM table2 t2 JOIN v1$x ON t2.id = v1$x.id",
    ),
    "Letters stuck to a number go with it": ("SELECT 1abc, 0x1G FROM t", "SELECT ?, ? FROM t"),
    "A cast keeps its type name": (
        "SELECT id FROM t WHERE created::date = '2024-01-01'::date",
        "SELECT id FROM t WHERE created::date = ?::date",
    ),
    # What stays
    "Placeholders stay": (
        "SELECT a FROM t WHERE a = $1 AND b = %s AND c = %(name)s AND d = :name AND e = ? AND f = :2",
        "SELECT a FROM t WHERE a = $1 AND b = %s AND c = %(name)s AND d = :name AND e = ? AND f = :2",
    ),
    "Double-quoted names stay, with digits, quotes and comment marks in them": (
        'SELECT "t 1"."col 2", "it\'s", "a--b", "say ""hi""" FROM "t 1"',
        'SELECT "t 1"."col 2", "it\'s", "a--b", "say ""hi""" FROM "t 1"',
    ),
    "Backquoted names stay": ("SELECT `order 2` FROM `t1`", "SELECT `order 2` FROM `t1`"),
    "TRUE, FALSE and NULL stay": (
        "SELECT id FROM t WHERE active = TRUE AND deleted = false AND parent_id IS NULL",
        "SELECT id FROM t WHERE active = TRUE AND deleted = false AND parent_id IS NULL",
    ),
    "Keywords keep their case": (
        "select Id from T where X = 1 Order By Id",
        "select Id from T where X = ? Order By Id",
    ),
    # Lists
    "An IN list of values is one value": (
        "SELECT name FROM res_partner WHERE id IN (1, 2, 3)",
        "SELECT name FROM res_partner WHERE id IN (?)",
    ),
    "An IN list of placeholders is one value": (
        "SELECT name FROM t WHERE id in ($1,$2,$3) OR ref IN (%s, %s)",
        "SELECT name FROM t WHERE id in (?) OR ref IN (?)",
    ),
    "NOT IN collapses too, whatever its spacing": (
        "SELECT a FROM t WHERE id NOT IN(  1 ,-2 , 'x' )",
        "SELECT a FROM t WHERE id NOT IN(?)",
    ),
    "An IN list with something other than values keeps its shape": (
        "SELECT a FROM t WHERE id IN (1, parent_id)",
        "SELECT a FROM t WHERE id IN (?, parent_id)",
    ),
    "A subquery after IN is no list": (
        "SELECT a FROM t WHERE id IN (SELECT id FROM u WHERE x = 1)",
        "SELECT a FROM t WHERE id IN (SELECT id FROM u WHERE x = ?)",
    ),
    "An ARRAY of values is one value": (
        "SELECT a FROM t WHERE id = ANY(ARRAY[1, 2, 3])",
        "SELECT a FROM t WHERE id = ANY(ARRAY[?])",
    ),
    "VALUES rows collapse to the first row": (
        "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'),\n (3, 'z')",
        "INSERT INTO t (a, b) VALUES (?, ?)",
    ),
    "A single VALUES row stays": (
        "INSERT INTO t (a, b) VALUES (1, 'x') RETURNING id",
        "INSERT INTO t (a, b) VALUES (?, ?) RETURNING id",
    ),
    "VALUES rows with NULL, DEFAULT and casts collapse too": (
        "INSERT INTO t VALUES (1, NULL, DEFAULT, '{}'::jsonb), (2, 'a', DEFAULT, '{\"k\": 1}'::jsonb)",
        "INSERT INTO t VALUES (?, NULL, DEFAULT, ?::jsonb)",
    ),
    # Comments and whitespace
    "A line comment is removed": ("SELECT 1 -- one\nFROM dual", "SELECT ? FROM dual"),
    "Block comments are removed, also between tokens": (
        "SELECT/* hint */a/**/FROM t /* x */ /* y */ WHERE b = 2",
        "SELECT a FROM t WHERE b = ?",
    ),
    "Whitespace runs are one space and the ends are trimmed": (
        "\n\tSELECT  a,\n       b\r\n  FROM t\u00a0 ;  ",
        "SELECT a, b FROM t ;",
    ),
    # Statements cut short
    "An unterminated string is a value up to the end": (
        "SELECT * FROM t WHERE name = 'Acme Cor",
        "SELECT * FROM t WHERE name = ?",
    ),
    "An unterminated comment is removed up to the end": ("SELECT a FROM t /* cut", "SELECT a FROM t"),
    "An unterminated dollar quote is a value up to the end": ("SELECT $body$ it's 42", "SELECT ?"),
    "An unterminated quoted name does not hide the values after it": (
        "SELECT \"res.part WHERE x = 'secret' AND y = 7",
        'SELECT "res.part WHERE x = ? AND y = ?',
    ),
    "An E string cut after a backslash leaves only the backslash": ("SELECT E'abc\\", "SELECT ?\\"),
    "An empty statement stays empty": (" \n ", ""),
    # ERP statements
    "An Odoo posting update": (
        "UPDATE account_move SET state = 'posted', amount = 1234.50 WHERE id IN (12, 13, 14)",
        "UPDATE account_move SET state = ?, amount = ? WHERE id IN (?)",
    ),
    "A CRM insert of two leads": (
        "INSERT INTO crm_lead (name, email) VALUES ('Acme', 'a@b.test'), ('Foo', 'f@b.test')",
        "INSERT INTO crm_lead (name, email) VALUES (?, ?)",
    ),
    "A partner lookup with a trailing comment": (
        "SELECT * FROM \"res.partner\" WHERE id = 42 AND name ILIKE '%smith%' -- lookup",
        'SELECT * FROM "res.partner" WHERE id = ? AND name ILIKE ?',
    ),
    "An Odoo search with quoted names, a domain and paging": (
        'SELECT "res_partner"."id" FROM "res_partner" WHERE ("res_partner"."active" = true)'
        ' AND ("res_partner"."company_id" in (1,3)) ORDER BY "res_partner"."display_name"'
        " LIMIT 80 OFFSET 160",
        'SELECT "res_partner"."id" FROM "res_partner" WHERE ("res_partner"."active" = true)'
        ' AND ("res_partner"."company_id" in (?)) ORDER BY "res_partner"."display_name"'
        " LIMIT ? OFFSET ?",
    ),
    "An Odoo batch create with placeholders": (
        'INSERT INTO "sale_order_line" ("create_uid", "order_id", "price_unit")'
        ' VALUES (%s, %s, %s), (%s, %s, %s) RETURNING "id"',
        'INSERT INTO "sale_order_line" ("create_uid", "order_id", "price_unit")'
        ' VALUES (%s, %s, %s) RETURNING "id"',
    ),
    "A stock move with a negative quantity": (
        "UPDATE stock_quant SET quantity = quantity + -5.0, write_date = now() WHERE id = 7",
        "UPDATE stock_quant SET quantity = quantity + ?, write_date = now() WHERE id = ?",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_normalize(name: str) -> None:
    statement, expected = CASES[name]
    assert normalize(statement) == expected
    assert normalize(expected) == expected


def test_statements_differing_only_in_values_are_one() -> None:
    assert normalize("SELECT * FROM t WHERE id IN (1, 2) AND x = 'a'") == normalize(
        "SELECT  *  FROM t\nWHERE id IN (7, 8, 9, 10) AND x = 'bb' -- retry"
    )


@pytest.mark.parametrize("kept", range(9))
def test_result_is_cut_to_max_length_and_stays_a_fixed_point(kept: int) -> None:
    # The cut keeps the first `kept` characters of a quoted name with a quote and a digit in it.
    name = '"it\'s 1"'
    statement = "SELECT " + "x" * (MAX_LENGTH - 9 - kept) + ", " + name + ", 2 FROM t WHERE a = 'secret'"
    normalized = normalize(statement)
    assert len(normalized) <= MAX_LENGTH
    assert normalized.startswith("SELECT xxx")
    assert normalize(normalized) == normalized
    assert "secret" not in normalized


# Property: a statement made of random names and random values comes out as the
# same statement with a ``?`` for each value, whatever the values were.

_RESERVED = {"in", "values", "array", "null", "true", "false", "default", "and", "or", "not", "select"}
names = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True).filter(lambda n: n not in _RESERVED)
quoted_names = st.text(st.characters(exclude_characters="([", exclude_categories=["Cs"]), max_size=10).map(
    lambda s: '"' + s.replace('"', '""') + '"'
)
any_name = st.one_of(names, quoted_names)
texts = st.text(max_size=20)


@st.composite
def literals(draw: st.DrawFn) -> tuple[str, str]:
    """``(sql, value)``: a literal as written in SQL and the value it holds."""
    kind = draw(st.sampled_from(["string", "e-string", "dollar", "int", "float", "hex"]))
    if kind == "string":
        value = draw(texts)
        return "'" + value.replace("'", "''") + "'", value
    if kind == "e-string":
        value = draw(texts)
        return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'", value
    if kind == "dollar":
        value = draw(texts.filter(lambda s: "$" not in s))
        tag = draw(st.sampled_from(["", "body", "q1"]))
        return f"${tag}${value}${tag}$", value
    if kind == "int":
        number = draw(st.integers())
        return str(number), str(abs(number))
    if kind == "float":
        number = draw(st.floats(allow_nan=False, allow_infinity=False))
        return repr(number), repr(abs(number))
    number = draw(st.integers(min_value=0))
    return hex(number), hex(number)


comment_text = texts.filter(lambda s: "*/" not in s and "\n" not in s and "\r" not in s)
separators = st.one_of(
    st.sampled_from([" ", "  ", "\n", "\t ", "\r\n  "]),
    comment_text.map(lambda s: f" /* {s} */ "),
    comment_text.map(lambda s: f" -- {s}\n"),
)


@st.composite
def statements(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """``(statement, expected, values)``, built as lists of ``(sql, expected)`` pieces."""
    values: list[str] = []

    def literal() -> str:
        sql, value = draw(literals())
        values.append(value)
        return sql

    pieces: list[tuple[str, str]] = []
    table = draw(any_name)
    if draw(st.booleans()):
        columns = draw(st.lists(any_name, min_size=1, max_size=4))
        rows = [[literal() for _ in columns] for _ in range(draw(st.integers(1, 3)))]
        pieces += [("INSERT INTO", "INSERT INTO"), (table, table), (f"({', '.join(columns)})",) * 2]
        first_row = "(" + ", ".join("?" for _ in columns) + ")"
        pieces.append(("VALUES " + ", ".join(f"({', '.join(row)})" for row in rows), "VALUES " + first_row))
    else:
        columns = draw(st.lists(any_name, min_size=1, max_size=3))
        pieces += [("SELECT", "SELECT"), (", ".join(columns),) * 2, ("FROM", "FROM"), (table, table)]
        for index in range(draw(st.integers(1, 4))):
            pieces.append(("WHERE", "WHERE") if index == 0 else ("AND", "AND"))
            column = draw(any_name)
            if draw(st.booleans()):
                operator = draw(st.sampled_from(["=", "<", ">=", "<>", "LIKE"]))
                pieces.append((f"{column} {operator} {literal()}", f"{column} {operator} ?"))
            else:
                items = [literal() for _ in range(draw(st.integers(1, 5)))]
                pieces.append((f"{column} IN ({', '.join(items)})", f"{column} IN (?)"))
    statement = draw(separators)
    for sql, _ in pieces:
        statement += sql + draw(separators)
    return statement, " ".join(expected for _, expected in pieces), values


@settings(max_examples=300, deadline=None)
@given(statements())
def test_no_value_survives_and_normalize_is_idempotent(case: tuple[str, str, list[str]]) -> None:
    statement, expected, values = case
    normalized = normalize(statement)
    assert normalized == expected
    # The same in other words: no value is in the output unless the names around it are.
    assert not [value for value in values if value and value in normalized and value not in expected]
    assert normalize(normalized) == normalized


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="SELECT in(),'\"$-/*\n 0123.eE:?%s[]")))
def test_any_text_is_normalized_without_error(text: str) -> None:
    normalized = normalize(text)
    assert len(normalized) <= MAX_LENGTH
    assert normalize(normalized) == normalized


def test_normalizer_caches_a_bounded_number_of_statements() -> None:
    normalizer = Normalizer(cache_size=3)
    statements = [f"SELECT * FROM t{n} WHERE id = {n}" for n in range(5)]  # noqa: S608 - never run
    for statement in statements:
        assert normalizer(statement) == normalize(statement)
        assert len(normalizer) <= 3
    assert (normalizer.hits, normalizer.misses) == (0, 5)

    assert normalizer(statements[4]) == normalize(statements[4])  # cached
    assert normalizer(statements[2]) == normalize(statements[2])  # cached, now the most recent
    assert (normalizer.hits, normalizer.misses) == (2, 5)
    normalizer(statements[0])  # a miss; the least recently used (3) makes room
    normalizer(statements[2])  # a hit
    normalizer(statements[3])  # a miss
    assert (normalizer.hits, normalizer.misses) == (3, 7)
    assert len(normalizer) == 3


def test_normalizer_does_not_keep_long_statements() -> None:
    normalizer = Normalizer()
    statement = "SELECT " + ", ".join(str(n) for n in range(5000))
    assert normalizer(statement) == normalizer(statement) == normalize(statement)
    assert (normalizer.hits, normalizer.misses, len(normalizer)) == (0, 2, 0)


def test_normalizer_without_a_cache() -> None:
    normalizer = Normalizer(cache_size=0)
    assert normalizer("SELECT 1") == normalizer("SELECT 1") == "SELECT ?"
    assert (normalizer.hits, normalizer.misses, len(normalizer)) == (0, 2, 0)
    with pytest.raises(ValueError, match="cache_size"):
        Normalizer(cache_size=-1)


def test_normalize_is_fast() -> None:
    statement = (
        'SELECT "res_partner"."id", "res_partner"."name" FROM "res_partner" WHERE '
        '"res_partner"."email" ILIKE \'%smith@example.com%\' AND "res_partner"."id" IN (1, 2, 3) '
        "AND amount > -12.5 -- search"
    )
    assert 180 <= len(statement) <= 220
    calls = 2000
    start = time.perf_counter()
    for _ in range(calls):
        normalize(statement)
    mean = (time.perf_counter() - start) / calls
    assert mean < 200e-6, f"{mean * 1e6:.1f} µs per statement"
