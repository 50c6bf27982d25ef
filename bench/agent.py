"""Agent benchmark: what the agent costs the application, against baselines of the same run.

    .venv/bin/python bench/agent.py            # or: make bench

Part 1, per-span CPU of the whole pipeline (start, end, processors, encoding,
export) in this process: the agent's pipeline (export queue, scrubbing
encoder, OTLP/HTTP sender) against the plain OpenTelemetry SDK with its own
``BatchSpanProcessor`` and ``OTLPSpanExporter``. Both record the same requests
(a server span, three database spans, an outbound HTTP span, with the
attributes the instrumentations set) and export them to a sink process on
127.0.0.1 that answers 200 (its CPU is not counted). Rounds alternate; the
median per pipeline is taken. Target: ratio <= 1.0.

Part 2, a realistic endpoint (one server span, three PostgreSQL queries, one
outbound HTTP call) of a Flask app under gunicorn, plain and under
``tierscope-agent run`` exporting to a real ``tierscope up``, each loaded by
the same closed-loop client for ``--duration`` seconds; each round runs both
back to back, the order swapped every round, and the throughput ratio is the
median of the rounds' ratios. With two or more cores the app is pinned to a
core of its own (``--no-pin`` turns it off). Target: throughput ratio >= 0.95;
the added p50 and p99 latency, the app's CPU per request with and without the
agent and the ratio they predict when the app's core is the bottleneck are
reported.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tierscope.agent.config import DEFAULT_SENSITIVE_PARAMS
from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.queue import ExportQueue
from tierscope.agent.scrub import Scrubber
from tierscope.agent.stats import AgentStats
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.collector import CollectorProcess, free_port

SINK = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else delayed ACKs add 40 ms to each answer

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._ok(b"")

        def do_GET(self):
            self._ok(b'{"credit":"ok"}')

        def _ok(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
    """
)


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/")
            connection.getresponse().read()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}"


# -- part 1: per-span CPU -----------------------------------------------------------------------------


def record_requests(provider: TracerProvider, count: int) -> None:
    """What instrumented code records for ``count`` requests: 5 spans each."""
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask", "0.66b1")
    db = provider.get_tracer("opentelemetry.instrumentation.psycopg2", "0.66b1")
    client = provider.get_tracer("opentelemetry.instrumentation.requests", "0.66b1")
    for number in range(count):
        with tracer.start_as_current_span(
            "GET /invoices/<int:invoice_id>",
            kind=SpanKind.SERVER,
            attributes={
                "http.method": "GET",
                "http.server_name": "127.0.0.1",
                "http.scheme": "http",
                "net.host.port": 8000,
                "http.host": "127.0.0.1:8000",
                "http.target": f"/invoices/{number}?page=2",
                "net.peer.ip": "127.0.0.1",
                "http.user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
                "http.flavor": "1.1",
                "http.route": "/invoices/<int:invoice_id>",
            },
        ) as server:
            for statement in (
                "SELECT id, total FROM invoices WHERE customer_id = %s",
                "SELECT sku, qty FROM invoice_lines WHERE invoice_id = %s",
                "UPDATE invoices SET viewed_at = now() WHERE id = %s",
            ):
                with db.start_as_current_span(
                    statement.split()[0],
                    kind=SpanKind.CLIENT,
                    attributes={
                        "db.system": "postgresql",
                        "db.name": "erp",
                        "db.statement": statement,
                        "db.user": "erp",
                        "net.peer.name": "127.0.0.1",
                        "net.peer.port": 5432,
                    },
                ):
                    pass
            with client.start_as_current_span(
                "GET",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.method": "GET",
                    "http.url": "http://127.0.0.1:8081/credit-check",
                    "http.status_code": 200,
                },
            ):
                pass
            server.set_attribute("http.status_code", 200)


def plain_pipeline(url: str, queue_size: int) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=queue_size, max_export_batch_size=512, schedule_delay_millis=200
        )
    )
    return provider


def agent_pipeline(url: str, queue_size: int) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    queue = ExportQueue(
        SpanEncoder(Scrubber(DEFAULT_SENSITIVE_PARAMS)),
        OtlpHttpSender(f"{url}/v1/traces", compression="none"),
        AgentStats(),
        max_queue_size=queue_size,
        max_batch_size=512,
        schedule_delay=0.2,
    )
    provider.add_span_processor(queue)
    return provider


def cpu_per_span(build: object, url: str, requests: int) -> float:
    provider = build(url, requests * 5 + 10)  # type: ignore[operator]
    record_requests(provider, 50)  # warm-up: imports, connections, memo
    provider.force_flush()
    started = time.process_time()  # every thread of this process: the exporter's too
    record_requests(provider, requests)
    provider.force_flush()
    used = time.process_time() - started
    provider.shutdown()
    return used / (requests * 5) * 1e6


def part_one(requests: int, rounds: int) -> dict[str, float]:
    sink, url = start_sink()
    try:
        plain, agent = [], []
        for _ in range(rounds):
            plain.append(cpu_per_span(plain_pipeline, url, requests))
            agent.append(cpu_per_span(agent_pipeline, url, requests))
    finally:
        sink.terminate()
        sink.wait()
    plain_us, agent_us = statistics.median(plain), statistics.median(agent)
    return {
        "sdk_cpu_us_per_span": round(plain_us, 2),
        "agent_cpu_us_per_span": round(agent_us, 2),
        "cpu_ratio": round(agent_us / plain_us, 3),
    }


# -- part 2: gunicorn endpoint ----------------------------------------------------------------------

APP = textwrap.dedent(
    """
    import os
    import psycopg2.pool
    import requests
    from flask import Flask, jsonify, render_template_string

    app = Flask(__name__)
    pool = None
    session = requests.Session()

    @app.get("/invoices/<int:customer_id>")
    def invoices(customer_id):
        global pool
        if pool is None:
            pool = psycopg2.pool.SimpleConnectionPool(1, 2, os.environ["DATABASE_URL"])
        conn = pool.getconn()
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    "SELECT id, total FROM invoices WHERE customer_id = %s ORDER BY id", (customer_id,)
                )
                rows = cursor.fetchall()
                cursor.execute("SELECT count(*), sum(qty) FROM invoice_lines WHERE invoice_id = ANY(%s)",
                               ([r[0] for r in rows],))
                lines = cursor.fetchone()
                cursor.execute("UPDATE customers SET viewed = viewed + 1 WHERE id = %s", (customer_id,))
            conn.commit()
        finally:
            pool.putconn(conn)
        credit = session.get(os.environ["OUTBOUND_URL"], timeout=5).json()
        invoices = [{"id": r[0], "total": float(r[1])} for r in rows]
        if os.environ.get("BENCH_RENDER") == "html":
            return render_template_string(PAGE, customer=customer_id, invoices=invoices, lines=lines[0])
        return jsonify(invoices=invoices, lines=lines[0], credit=credit)

    # The customer page of a CRM: the same data, rendered (``--render html``).
    PAGE = '''<!doctype html><html><head><title>Customer {{ customer }}</title></head><body>
    <h1>Customer {{ customer }}</h1><p>{{ lines }} invoice lines</p>
    <table>{% for invoice in invoices %}<tr class="{{ loop.cycle('odd', 'even') }}">
    <td><a href="/invoices/{{ invoice.id }}">#{{ invoice.id }}</a></td>
    <td>{{ "%.2f"|format(invoice.total) }} EUR</td><td>{{ (invoice.total * 0.19)|round(2) }}</td>
    </tr>{% endfor %}</table></body></html>'''
    """
)


def seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS invoice_lines, invoices, customers")
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, viewed int NOT NULL DEFAULT 0)")
        conn.execute("CREATE TABLE invoices (id serial PRIMARY KEY, customer_id int, total numeric)")
        conn.execute("CREATE TABLE invoice_lines (id serial PRIMARY KEY, invoice_id int, qty int)")
        conn.execute("INSERT INTO customers SELECT g FROM generate_series(1, 200) g")
        conn.execute(
            "INSERT INTO invoices (customer_id, total) "
            "SELECT g % 200 + 1, g * 1.5 FROM generate_series(1, 4000) g"
        )
        conn.execute(
            "INSERT INTO invoice_lines (invoice_id, qty) "
            "SELECT g % 4000 + 1, g % 7 FROM generate_series(1, 20000) g"
        )
        conn.execute("CREATE INDEX ON invoices (customer_id)")
        conn.execute("CREATE INDEX ON invoice_lines (invoice_id)")
        conn.execute("ANALYZE")


def load(url: str, seconds: float, clients: int) -> tuple[int, list[float]]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        mine = []
        customer = number
        while time.monotonic() < stop:
            customer = customer % 200 + 1
            started = time.perf_counter()
            connection.request("GET", f"/invoices/{customer}")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (gunicorn and its workers)."""
    import psutil

    total = 0.0
    parent = psutil.Process(pid)
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_gunicorn(
    workdir: Path, env: dict[str, str], instrumented: bool, cpu: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "app:app",
    ]
    if instrumented:
        command = [str(Path(sys.executable).with_name("tierscope-agent")), "run", "--", *command]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/invoices/1")
            if connection.getresponse().status == 200:
                return process, url
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not start")


def part_two(
    seconds: float, rounds: int, clients: int, export_to: str, render: str, pin: bool
) -> dict[str, float]:
    last = max(os.sched_getaffinity(0))
    if pin:
        # The app alone on the last core; this process and all it starts (PostgreSQL,
        # collector, sink, load) on the others: the app's own CPU sets the pace.
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {last})
    with tempfile.TemporaryDirectory(prefix="tierscope-bench-agent-") as temp:
        workdir = Path(temp)
        (workdir / "app.py").write_text(APP)
        postgres = EmbeddedPostgres(workdir / "postgres")
        postgres.start()
        sink, outbound = start_sink()
        collector = None
        try:
            app_dsn = postgres.dsn.rsplit("/", 1)[0] + "/bench_app"
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench_app")
            seed(app_dsn)
            collector_dsn = postgres.dsn.rsplit("/", 1)[0] + "/bench_collector"
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench_collector")
            collector = CollectorProcess(workdir / "collector", database_url=collector_dsn).start()
            endpoint = outbound if export_to == "sink" else collector.url
            env = {
                **os.environ,
                "DATABASE_URL": app_dsn,
                "OUTBOUND_URL": f"{outbound}/credit-check",
                "TIERSCOPE_ENDPOINT": endpoint,
                "TIERSCOPE_INGEST_KEY": collector.credentials()["ingest_key"],
                "TIERSCOPE_SERVICE": "bench-erp",
                "BENCH_RENDER": render,
            }
            results: dict[bool, list[tuple[float, list[float]]]] = {False: [], True: []}
            collector_ms: list[float] = []
            app_ms: dict[bool, list[float]] = {False: [], True: []}
            for number in range(rounds):
                # Each round runs both, the order alternating, so a drift in the
                # neighbours' load does not always fall on the same side.
                for instrumented in (False, True) if number % 2 == 0 else (True, False):
                    process, url = run_gunicorn(workdir, env, instrumented, last if pin else None)
                    try:
                        load(url, 1.0, clients)  # warm-up
                        collector_cpu = collector.cpu_seconds()
                        app_cpu = tree_cpu(process.pid)
                        count, latencies = load(url, seconds, clients)
                        results[instrumented].append((count / seconds, latencies))
                        app_ms[instrumented].append((tree_cpu(process.pid) - app_cpu) / count * 1000)
                        if instrumented:
                            collector_ms.append((collector.cpu_seconds() - collector_cpu) / count * 1000)
                    finally:
                        process.send_signal(signal.SIGTERM)
                        process.wait(30)
        finally:
            if collector is not None:
                collector.stop()
            sink.terminate()
            sink.wait()
            postgres.stop()

    def summary(runs: list[tuple[float, list[float]]]) -> tuple[float, float, float]:
        rate = statistics.median(r for r, _ in runs)
        everything = sorted(x for _, lat in runs for x in lat)
        p50 = everything[len(everything) // 2]
        p99 = everything[int(len(everything) * 0.99)]
        return rate, p50, p99

    plain_rate, plain_p50, plain_p99 = summary(results[False])
    agent_rate, agent_p50, agent_p99 = summary(results[True])
    # Rounds are pairs run back to back: the median of their ratios follows the
    # neighbours' load less than the ratio of the two medians does.
    paired = statistics.median(
        agent[0] / plain[0] for plain, agent in zip(results[False], results[True], strict=True)
    )
    plain_cpu, agent_cpu = statistics.median(app_ms[False]), statistics.median(app_ms[True])
    return {
        "plain_requests_per_s": round(plain_rate, 1),
        "agent_requests_per_s": round(agent_rate, 1),
        "throughput_ratio": round(paired, 3),
        "throughput_ratio_of_medians": round(agent_rate / plain_rate, 3),
        "throughput_ratios_per_round": [
            round(agent[0] / plain[0], 3) for plain, agent in zip(results[False], results[True], strict=True)
        ],
        "plain_p50_ms": round(plain_p50 * 1000, 2),
        "added_p50_ms": round((agent_p50 - plain_p50) * 1000, 2),
        "plain_p99_ms": round(plain_p99 * 1000, 2),
        "added_p99_ms": round((agent_p99 - plain_p99) * 1000, 2),
        "collector_cpu_ms_per_request": round(statistics.median(collector_ms), 3),
        "app_cpu_ms_per_request_plain": round(plain_cpu, 3),
        "app_cpu_ms_per_request_agent": round(agent_cpu, 3),
        "added_app_cpu_ms_per_request": round(agent_cpu - plain_cpu, 3),
        # What the throughput ratio is when the app's core is the bottleneck.
        "cpu_bound_throughput_ratio": round(plain_cpu / agent_cpu, 3),
        "pinned": pin,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests (5 spans each) per CPU round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of part 1")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per gunicorn run")
    parser.add_argument("--load-rounds", type=int, default=5, help="alternating rounds of part 2")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of part 2")
    parser.add_argument("--skip-endpoint", action="store_true", help="part 1 only")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="part 2: the app on a core of its own, the rest on the others (default with 2+ cores)",
    )
    parser.add_argument(
        "--render",
        choices=("json", "html"),
        default="json",
        help="part 2: answer JSON (default), or render the customer's page from a template",
    )
    parser.add_argument(
        "--export-to",
        choices=("collector", "sink"),
        default="collector",
        help="part 2: export to a real tierscope up (default), or to a sink that only answers 200",
    )
    args = parser.parse_args()
    figures: dict[str, object] = dict(part_one(args.requests, args.rounds))
    print(
        f"per span CPU: SDK {figures['sdk_cpu_us_per_span']} us, "
        f"agent {figures['agent_cpu_us_per_span']} us, "
        f"ratio {figures['cpu_ratio']} (target <= 1.0)",
        file=sys.stderr,
    )
    if not args.skip_endpoint:
        figures.update(
            part_two(args.duration, args.load_rounds, args.clients, args.export_to, args.render, args.pin)
        )
        print(
            f"gunicorn endpoint: {figures['plain_requests_per_s']} req/s plain, "
            f"{figures['agent_requests_per_s']} req/s with the agent, ratio {figures['throughput_ratio']} "
            f"(target >= 0.95); added p50 {figures['added_p50_ms']} ms, p99 {figures['added_p99_ms']} ms",
            file=sys.stderr,
        )
        print(
            f"app CPU per request: {figures['app_cpu_ms_per_request_plain']} ms plain, "
            f"{figures['app_cpu_ms_per_request_agent']} ms with the agent "
            f"(+{figures['added_app_cpu_ms_per_request']} ms; CPU-bound ratio "
            f"{figures['cpu_bound_throughput_ratio']})",
            file=sys.stderr,
        )
    figures["cpu_target_met"] = figures["cpu_ratio"] <= 1.0
    if "throughput_ratio" in figures:
        figures["throughput_target_met"] = figures["throughput_ratio"] >= 0.95
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
