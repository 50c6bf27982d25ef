"""``crm-web``: the CRM. Flask (WSGI, under gunicorn), HTML pages and a JSON API:
login, lead list and search, create lead, contact detail, opportunity pipeline.
Contact detail asks ``ext-services`` for a credit check, and a new lead's address
is verified there first.
"""

from __future__ import annotations

import os
import secrets

import requests
from flask import Flask, abort, jsonify, make_response, render_template_string, request

from tierscope.demo.apps.common import burn_cpu, faults, pool, rum_tag, site_of, tag_request

EXT_URL = os.environ.get("TIERSCOPE_DEMO_EXT_URL", "http://127.0.0.1:9")
EXT_TIMEOUT = 1.5  # seconds: a hung ext-services costs a user this, then an error

app = Flask(__name__)
db = pool(size=8)
http = requests.Session()

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }} · Demo CRM</title>
{{ rum|safe }}<link rel="stylesheet" href="/static/crm.css"></head>
<body><header><a href="/leads">Leads</a> · <a href="/pipeline">Pipeline</a></header>
<main><h1>{{ title }}</h1>{{ body|safe }}</main>
{% if search %}<script src="/static/search.js"></script>{% endif %}
{% if heavy %}<script src="/static/heavy.js"></script>{% endif %}
</body></html>"""

# The browser_slow fault: a script that holds the main thread for about a second.
_HEAVY_JS = "(function(){var end=Date.now()+1200;var x=0;while(Date.now()<end){x+=Math.sqrt(x+1);}})();"
# The lead list's search box asks the JSON API from the page (an in-page fetch).
_SEARCH_JS = """document.getElementById('search').addEventListener('submit', function (e) {
  e.preventDefault();
  var q = document.getElementById('q').value, out = document.getElementById('found');
  fetch('/api/leads?q=' + encodeURIComponent(q)).then(function (r) { return r.json(); })
    .then(function (rows) { out.textContent = rows.length + ' leads'; out.dataset.done = '1'; });
});"""
_CSS = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td{padding:2px 8px}"


def page(title: str, body: str, heavy: bool = False, search: bool = False) -> str:
    rum = rum_tag(site_of(request.headers, request.cookies))
    return render_template_string(_PAGE, title=title, body=body, heavy=heavy, search=search, rum=rum)


def table(rows: list[tuple[object, ...]]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{_escape(value)}</td>" for value in row) + "</tr>" for row in rows)
    return f"<table>{cells}</table>"


def _escape(value: object) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@app.before_request
def _tag() -> None:
    tag_request(request.headers, request.cookies)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/static/crm.css")
def css():  # type: ignore[no-untyped-def]
    response = make_response(_CSS)
    response.headers["Content-Type"] = "text/css"
    response.headers["Cache-Control"] = "max-age=3600"
    return response


@app.get("/static/heavy.js")
def heavy_js():  # type: ignore[no-untyped-def]
    response = make_response(_HEAVY_JS)
    response.headers["Content-Type"] = "application/javascript"
    return response


@app.get("/static/search.js")
def search_js():  # type: ignore[no-untyped-def]
    response = make_response(_SEARCH_JS)
    response.headers["Content-Type"] = "application/javascript"
    response.headers["Cache-Control"] = "max-age=3600"
    return response


@app.get("/login")
def login_page() -> str:
    form = '<form method="post" action="/login"><input name="login"><input name="password" type="password">'
    return page("Sign in", form + "<button>Sign in</button></form>")


@app.post("/login")
def login():  # type: ignore[no-untyped-def]
    login_name = request.form.get("login", "")
    password = request.form.get("password", "")
    with db.connection() as conn:
        row = conn.execute(
            "SELECT id FROM users WHERE login = %s AND password = %s", (login_name, password)
        ).fetchone()
    if row is None:
        return page("Sign in", "<p>Wrong login or password.</p>"), 401
    response = make_response(jsonify({"user": login_name}))
    response.set_cookie("crm_session", secrets.token_hex(16), httponly=True, samesite="Lax")
    return response


@app.get("/leads")
def leads_page() -> str:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, name, company, city, status FROM leads ORDER BY created_at DESC, id DESC LIMIT 50"
        ).fetchall()
    search = (
        '<form id="search"><input id="q" name="q">'
        '<button data-tierscope-action="Search leads">Search</button> <span id="found"></span></form>'
    )
    return page("Leads", search + table(rows), search=True)


@app.get("/api/leads")
def search_leads():  # type: ignore[no-untyped-def]
    query = request.args.get("q", "")[:64]
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, name, company, city FROM leads WHERE company ILIKE %s ORDER BY id LIMIT 25",
            (f"%{query}%",),
        ).fetchall()
    return jsonify([{"id": r[0], "name": r[1], "company": r[2], "city": r[3]} for r in rows])


@app.post("/api/leads")
def create_lead():  # type: ignore[no-untyped-def]
    lead = request.get_json(silent=True) or {}
    name, company, city = (str(lead.get(key, ""))[:80] for key in ("name", "company", "city"))
    if not name or not company:
        return jsonify({"error": "name and company are required"}), 422
    try:
        verified = http.post(f"{EXT_URL}/verify-address", json={"city": city}, timeout=EXT_TIMEOUT)
        verified.raise_for_status()
    except requests.RequestException:
        return jsonify({"error": "address verification is unavailable"}), 502
    with db.connection() as conn:
        row = conn.execute(
            "INSERT INTO leads (name, company, city) VALUES (%s, %s, %s) RETURNING id", (name, company, city)
        ).fetchone()
    assert row is not None
    return jsonify({"id": row[0]}), 201


@app.get("/contacts/<int:contact_id>")
def contact_detail(contact_id: int):  # type: ignore[no-untyped-def]
    with db.connection() as conn:
        contact = conn.execute(
            "SELECT name, company, city FROM contacts WHERE id = %s", (contact_id,)
        ).fetchone()
        if contact is None:
            abort(404)
        deals = conn.execute(
            "SELECT stage, amount FROM opportunities WHERE contact_id = %s ORDER BY amount DESC",
            (contact_id,),
        ).fetchall()
    try:
        credit = http.get(f"{EXT_URL}/credit-check", params={"company": contact[1]}, timeout=EXT_TIMEOUT)
        credit.raise_for_status()
        rating = credit.json().get("rating", "?")
    except requests.RequestException:
        # Without a credit rating the account page is not shown: the user sees an error.
        return page("Credit check unavailable", "<p>Please try again later.</p>"), 502
    body = f"<p>{_escape(contact[1])}, {_escape(contact[2])} · credit: {_escape(rating)}</p>" + table(deals)
    return page(contact[0], body)


@app.get("/pipeline")
def pipeline() -> str:
    with db.connection() as conn:
        stages = conn.execute(
            "SELECT stage, count(*), sum(amount) FROM opportunities GROUP BY stage ORDER BY stage"
        ).fetchall()
    if faults.active("app_cpu"):
        burn_cpu(0.15)
    return page("Opportunity pipeline", table(stages), heavy=faults.active("browser_slow"))
