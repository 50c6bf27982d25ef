"""``erp-api``: the ERP's HTTP API. FastAPI under uvicorn: sales orders,
inventory check, post invoice (one transaction of several statements), imports,
and a JSON-RPC endpoint whose operation is in the body (named by ``rpc.method``).
Invoices and imports hand work to ``erp-worker`` through the ``jobs`` table,
with the request's trace context stored beside each job.
"""

from __future__ import annotations

import json
import random
from html import escape
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from opentelemetry import trace
from pydantic import BaseModel, Field

import tierscope.agent
from tierscope.demo.apps.common import die_with_parent, faults, pool, rum_tag, site_of, tag_request

app = FastAPI(title="erp-api", openapi_url=None, docs_url=None, redoc_url=None)
db = pool(size=8)
tracer = trace.get_tracer("erp-api")
die_with_parent()


class OrderLine(BaseModel):
    sku: str = Field(max_length=16)
    quantity: int = Field(ge=1, le=1000)


class Order(BaseModel):
    customer_id: int = Field(ge=1)
    lines: list[OrderLine] = Field(min_length=1, max_length=20)


class Import(BaseModel):
    rows: int = Field(ge=1, le=500)


class RpcCall(BaseModel):
    jsonrpc: str = "2.0"
    method: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    id: int | str | None = None


class OrderRejected(Exception):
    """The error_spike fault: a bug in order validation."""


@app.middleware("http")
async def _tag(request: Request, call_next):  # type: ignore[no-untyped-def]
    tag_request(request.headers, request.cookies)
    return await call_next(request)


@app.get("/health")
def health() -> str:
    return "ok"


# The order desk: back-office staff check stock and post invoices from the page,
# which calls the JSON API (in-page fetches, each joined to its own trace).
_DESK_JS = """document.addEventListener('click', function (e) {
  var b = e.target.closest('button[data-call]');
  if (!b) return;
  var out = document.getElementById('result');
  fetch(b.dataset.call, {method: b.dataset.method}).then(function (r) {
    out.textContent = b.textContent + ': ' + r.status; out.dataset.done = b.dataset.call;
  });
});"""


@app.get("/orders", response_class=HTMLResponse)
def order_desk(request: Request) -> str:
    with db.connection() as conn:
        orders = conn.execute(
            "SELECT o.id, o.status, o.total, min(l.sku) FROM sales_orders o"
            " JOIN order_lines l ON l.order_id = o.id"
            " GROUP BY o.id ORDER BY o.id DESC LIMIT 15"
        ).fetchall()
    rows = "".join(
        f"<tr><td>{number}</td><td>{escape(status)}</td><td>{total}</td>"
        f'<td><button data-call="/api/inventory/{escape(sku)}" data-method="GET"'
        f' data-tierscope-action="Check stock">Check stock</button>'
        + (
            f' <button data-call="/api/invoices/{number}/post" data-method="POST"'
            f' data-tierscope-action="Post invoice">Post invoice</button>'
            if status == "open"
            else ""
        )
        + "</td></tr>"
        for number, status, total, sku in orders
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Order desk · Demo ERP</title>'
        + rum_tag(site_of(request.headers, request.cookies))
        + f'</head><body><h1>Order desk</h1><p id="result"></p><table>{rows}</table>'
        + f"<script>{_DESK_JS}</script></body></html>"
    )


def enqueue(cur: Any, kind: str, payload: dict[str, Any]) -> None:
    """A job for erp-worker, carrying this request's trace context."""
    cur.execute(
        "INSERT INTO jobs (kind, payload, trace) VALUES (%s, %s, %s)",
        (kind, json.dumps(payload), json.dumps(tierscope.agent.job_context())),
    )


def validate(order: Order) -> None:
    """The order's business rules; with the error_spike fault, a bug that raises.
    A span of the app's own (as ERP code adds around its rule engine), so the
    error's origin is the app's code, not the HTTP layer that reports the 500."""
    with tracer.start_as_current_span("orders.validate"):
        if faults.active("error_spike") and random.random() < 0.5:
            raise OrderRejected("order validation failed")


@app.post("/api/orders", status_code=201)
def create_order(order: Order) -> dict[str, Any]:
    with tracer.start_as_current_span("orders.check"):  # the rule engine calls each rule in turn
        validate(order)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO sales_orders (customer_id) VALUES (%s) RETURNING id", (order.customer_id,))
        row = cur.fetchone()
        assert row is not None
        total = 0.0
        for line in order.lines:
            cur.execute("SELECT price FROM inventory WHERE sku = %s", (line.sku,))
            price = cur.fetchone()
            if price is None:
                raise HTTPException(422, f"unknown sku {line.sku}")
            cur.execute(
                "INSERT INTO order_lines (order_id, sku, quantity, price) VALUES (%s, %s, %s, %s)",
                (row[0], line.sku, line.quantity, price[0]),
            )
            total += float(price[0]) * line.quantity
        cur.execute("UPDATE sales_orders SET total = %s WHERE id = %s", (total, row[0]))
    return {"id": row[0], "total": round(total, 2)}


@app.get("/api/orders/{order_id}")
def get_order(order_id: int) -> dict[str, Any]:
    with db.connection() as conn:
        order = conn.execute(
            "SELECT id, status, total FROM sales_orders WHERE id = %s", (order_id,)
        ).fetchone()
        if order is None:
            raise HTTPException(404, "no such order")
        lines = conn.execute(
            "SELECT sku, quantity FROM order_lines WHERE order_id = %s", (order_id,)
        ).fetchall()
    return {"id": order[0], "status": order[1], "total": float(order[2]), "lines": [list(li) for li in lines]}


@app.get("/api/inventory/{sku}")
def check_inventory(sku: str) -> dict[str, Any]:
    # The same statement with or without the db_slow fault; only its cost changes.
    delay = 0.3 if faults.active("db_slow") else 0.0
    with db.connection() as conn:
        row = conn.execute(
            "SELECT sku, on_hand, pg_sleep(%s) FROM inventory WHERE sku = %s", (delay, sku)
        ).fetchone()
    if row is None:
        raise HTTPException(404, "no such sku")
    return {"sku": row[0], "on_hand": row[1]}


@app.post("/api/invoices/{order_id}/post")
def post_invoice(order_id: int) -> dict[str, Any]:
    """Several statements in one transaction: the invoice, two ledger entries, the
    order's status; then an approval workflow for the worker."""
    with db.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT total FROM sales_orders WHERE id = %s AND status = 'open' FOR UPDATE", (order_id,)
        )
        order = cur.fetchone()
        if order is None:
            raise HTTPException(409, "no open order with that id")
        cur.execute(
            "INSERT INTO invoices (order_id, amount) VALUES (%s, %s) RETURNING id", (order_id, order[0])
        )
        invoice = cur.fetchone()
        assert invoice is not None
        cur.execute(
            "INSERT INTO ledger (invoice_id, account, amount) VALUES (%s, 'receivables', %s), "
            "(%s, 'revenue', -%s)",
            (invoice[0], order[0], invoice[0], order[0]),
        )
        cur.execute("UPDATE sales_orders SET status = 'invoiced' WHERE id = %s", (order_id,))
        enqueue(cur, "invoice_workflow", {"invoice": invoice[0]})
    return {"invoice": invoice[0]}


@app.post("/api/imports", status_code=202)
def start_import(job: Import) -> dict[str, Any]:
    with db.connection() as conn, conn.cursor() as cur:
        enqueue(cur, "import_customers", {"rows": job.rows})
    return {"queued": True}


_RPC_METHODS = {
    "partner.search": "SELECT id, name FROM customers WHERE name ILIKE %s ORDER BY id LIMIT 20",
    "product.read": "SELECT sku, name, price FROM inventory WHERE sku ILIKE %s ORDER BY sku LIMIT 20",
}


@app.post("/rpc")
def rpc(call: RpcCall) -> dict[str, Any]:
    """JSON-RPC 2.0: every call posts to one URL; the operation is in the body."""
    span = trace.get_current_span()
    span.set_attribute("rpc.system", "jsonrpc")
    span.set_attribute("rpc.service", "erp")
    span.set_attribute("rpc.method", call.method if call.method in _RPC_METHODS else "unknown")
    query = _RPC_METHODS.get(call.method)
    if query is None:
        return {"jsonrpc": "2.0", "id": call.id, "error": {"code": -32601, "message": "method not found"}}
    term = str(call.params.get("term", ""))[:32]
    with db.connection() as conn:
        rows = conn.execute(query, (f"%{term}%",)).fetchall()
    return {"jsonrpc": "2.0", "id": call.id, "result": [[str(v) for v in row] for row in rows]}
