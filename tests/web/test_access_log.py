"""Proxy log lines, the access-log middleware and the logToStdout wiring."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from aiohttp import web

from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.observe.access_log import (
    TIME_FORMATS,
    ProxyLog,
    go_duration,
)

from .conftest import make_plan, real_stack

WHEN = datetime(2024, 3, 5, 14, 7, 9, 123456, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rfc3339", "2024-03-05T14:07:09+02:00"),
        ("rfc3339nano", "2024-03-05T14:07:09.123456+02:00"),
        ("kitchen", "2:07PM"),
        ("stampmilli", "Mar  5 14:07:09.123"),
        ("rfc1123z", "Tue, 05 Mar 2024 14:07:09 +0200"),
        ("ansic", "Tue Mar  5 14:07:09 2024"),
    ],
)
def test_time_formats(name: str, text: str) -> None:
    assert TIME_FORMATS[name](WHEN) == text


def test_rfc3339_utc_is_z() -> None:
    assert TIME_FORMATS["rfc3339"](datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00Z"


def test_levels_and_timestamps() -> None:
    buf = LogBuffer("proxy")
    log = ProxyLog(buf, "warn", "rfc3339", now=lambda: WHEN)
    log.info("hidden")
    log.warn("shown")
    log.error("also")
    assert buf.history() == (
        "2024-03-05T14:07:09+02:00 [WARN] shown\n2024-03-05T14:07:09+02:00 [ERROR] also\n"
    )
    buf2 = LogBuffer("p")
    ProxyLog(buf2, "bogus", "unknown-format").info("x")
    assert buf2.history() == "[INFO] x\n"


def test_go_durations() -> None:
    assert go_duration(0.0000005) == "500ns"
    assert go_duration(0.0015) == "1.5ms"
    assert go_duration(2.25) == "2.25s"
    assert go_duration(0.00085) == "850µs"
    assert go_duration(125) == "2m5s"


async def test_one_line_per_request_without_keys(serve) -> None:
    buf = LogBuffer("proxy")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application(middlewares=real_stack(make_plan(apiKeys=("sk-secret",)), buf))
    app.router.add_route("*", "/{tail:.*}", hello)
    client = await serve(app)
    await client.post("/v1/chat/completions?x=1", headers={
        "Authorization": "Bearer sk-secret", "X-Forwarded-For": "10.0.0.7, 10.0.0.1", "User-Agent": "ua/1"})
    await client.get("/running", headers={"X-Real-IP": "10.9.9.9", "x-api-key": "sk-wrong"})
    await client.get("/wol-health")
    await client.get("/metrics")
    lines = buf.history().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r'\[INFO\] Request 10\.0\.0\.7 "POST /v1/chat/completions HTTP/1\.1" 200 5 "ua/1" \S+', lines[0])
    assert lines[1].startswith('[INFO] Request 10.9.9.9 "GET /running HTTP/1.1" 401 ')
    assert "sk-" not in buf.history()


async def test_a_streamed_response_logs_its_body_bytes_not_the_chunked_framing(serve) -> None:
    from llama_swap.runtime.http.aio.proxy import CountingResponse

    buf = LogBuffer("proxy")

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = CountingResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(3):
            await resp.write(b"data: 12345\n\n")  # 13 bytes each
        await resp.write_eof()
        return resp

    app = web.Application(middlewares=real_stack(proxy_log=buf))
    app.router.add_get("/s", stream)
    client = await serve(app)
    async with client.get("/s") as resp:
        assert await resp.read() == b"data: 12345\n\n" * 3
    assert ' "GET /s HTTP/1.1" 200 39 ' in buf.history()


def test_python_log_records_carry_the_configured_time_format() -> None:
    import logging

    from llama_swap.compiler.plan import Plan, Settings
    from llama_swap.runtime.serve import wire_logs

    plan = Plan(settings=Settings(logLevel="info", logTimeFormat="rfc3339", logToStdout="none"))
    logger = logging.getLogger("llama_swap")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        proxy, _ = wire_logs(plan)
        logging.getLogger("llama_swap.test").info("hello %s", "there")
        logging.getLogger("llama_swap.test").debug("dropped")
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    line = proxy.history().splitlines()[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d) \[INFO\] hello there", line)
    assert "dropped" not in proxy.history()
