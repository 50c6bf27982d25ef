"""A program that forks while the agent's exporter thread runs: with os.fork, and
with multiprocessing's fork context (whose children end with os._exit)."""

import multiprocessing
import os
import sys

from opentelemetry import trace

import tierscope.agent


def record(name: str) -> None:
    tracer = trace.get_tracer("forking")
    with tracer.start_as_current_span(name) as span:
        span.set_attribute("app.pid", os.getpid())
        print(name, format(span.get_span_context().trace_id, "032x"), os.getpid(), flush=True)


def main() -> None:
    record("before fork")
    agent = tierscope.agent.current()
    assert agent is not None
    agent.flush()  # the exporter thread is running now

    pid = os.fork()
    if pid == 0:
        record("os.fork child")
        sys.exit(0)
    os.waitpid(pid, 0)

    child = multiprocessing.get_context("fork").Process(target=record, args=("multiprocessing child",))
    child.start()
    child.join()
    record("after fork")


if __name__ == "__main__":
    main()
