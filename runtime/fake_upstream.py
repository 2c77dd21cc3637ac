"""An OpenAI-compatible fake model server for tests, benchmarks and the demo.

Why: the runtime must be tested with real child processes and real HTTP, without a GPU.  This
server behaves like a tiny llama-server (health, models, `/props`, chat/completions with SSE
streaming, embeddings, multipart audio/image uploads) and adds what tests need to see inside it:

- every JSON response carries a `fake` block echoing what reached it (pid, port, model, path,
  method, headers, and the parsed JSON body, or `body_sha256` + `bytes` for other bodies;
  multipart uploads list their parts with size and sha256, read part by part, never whole);
- `GET /fake/stats` reports request counts and current / maximum concurrency;
- `--record FILE` appends one JSON line {pid, model, path, raw_path, start, end} per served
  request (`raw_path`: the request target exactly as it arrived, percent-encoding and query kept),
  written with a single O_APPEND write, so several processes can share one file;
- failure modes: `exit-on-start`, `never-healthy`, `crash-mid-stream`;
- `--vllm-metrics`: answers carry vLLM's per-request `metrics` (a body's top level, a
  stream's last content chunk), for the activity log's vLLM parsing;
- `--drain-on-sigterm SECONDS`: on SIGTERM, wait (up to that long) for open client
  connections to close before exiting, as llama-server does, then print how many were left.

With `--timings` it answers like llama-server does about speed: every completion carries a
`timings` object (`prompt_n`, `prompt_ms`, `prompt_per_second`, `predicted_n`,
`predicted_ms`, `predicted_per_second`, `cache_n`), in the JSON body or the last streamed
chunk, and a stream's last chunk carries `usage` too, so the proxy's activity log shows
tokens/s.  Generation time is measured, counted as at least 1 ms per token (so an
undelayed fake reports at most 1000 tokens/s instead of an absurd figure).

Per request, a JSON body may set `max_tokens` (token count) and `fake_delay` (seconds to wait
before answering).  Start-up is kept fast: argparse first, aiohttp only when about to listen.

Run: `swap-fake-upstream --port 8081 --model m1 --start-delay 0.5` (or
`python tests/upstream_fake.py ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

_T0 = time.monotonic()
FAILURES = ("exit-on-start", "never-healthy", "crash-mid-stream")
UNCOUNTED = ("/health", "/fake/")  # not "served work": excluded from stats and --record
VLLM_METRICS = {"time_to_first_token_ms": 50.0, "mean_itl_ms": 10.0, "tokens_per_second": 1.0,
                "speculative_decoding": {"num_draft_tokens": 8, "num_accepted_draft_tokens": 6}}


@dataclass
class Options:
    port: int = 0
    host: str = "127.0.0.1"
    model: str = "fake"
    start_delay: float = 0.0
    response_delay: float = 0.0
    tokens: int = 5
    token_delay: float = 0.0
    fail: str | None = None
    record: str | None = None
    ignore_sigterm: bool = False
    drain_on_sigterm: float = 0.0  # seconds to wait for client connections at SIGTERM
    vllm_metrics: bool = False
    timings: bool = False


@dataclass
class Stats:
    requests: int = 0
    current: int = 0
    max: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="swap-fake-upstream", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="fake", help="model name reported by /v1/models")
    p.add_argument("--start-delay", type=float, default=0.0,
                   help="seconds from process start until listening (simulated model load)")
    p.add_argument("--response-delay", type=float, default=0.0,
                   help="seconds to wait before answering each request")
    p.add_argument("--tokens", type=int, default=5, help="tokens per completion")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    p.add_argument("--fail", choices=FAILURES, default=None, help="failure mode")
    p.add_argument("--record", default=None, help="append one JSON line per served request")
    p.add_argument("--ignore-sigterm", action="store_true", help="keep running on SIGTERM")
    p.add_argument("--drain-on-sigterm", type=float, default=0.0, metavar="SECONDS",
                   help="on SIGTERM, wait up to SECONDS for open client connections to close "
                        "before exiting, as llama-server does, and say how many were left")
    p.add_argument("--vllm-metrics", action="store_true",
                   help="answer vLLM's per-request `metrics` (ttft 50 ms, inter-token 10 ms, "
                        "speculative decoding 8 drafted / 6 accepted) beside `usage`")
    p.add_argument("--timings", action="store_true",
                   help="report llama-server style `timings` (and usage in streams)")
    ns = p.parse_args(argv)
    return Options(**vars(ns))


def say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


# -- request bodies ------------------------------------------------------------------------------

async def read_body(request: web.Request) -> dict[str, Any]:
    """The echo of the request body: parsed JSON, multipart parts, or sha256 + size."""
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        return await read_multipart(request)
    digest = hashlib.sha256()
    size = 0
    raw = bytearray()
    is_json = ctype == "application/json" or ctype.endswith("+json")
    async for chunk in request.content.iter_chunked(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
        if is_json:
            raw += chunk
    out: dict[str, Any] = {"bytes": size, "body_sha256": digest.hexdigest()}
    if is_json and size:
        try:
            out["body"] = json.loads(raw)
            del out["body_sha256"]
        except ValueError:
            out["body_error"] = "invalid JSON"
    return out


def _json_object(body: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON body when it is an object, else {}."""
    parsed = body.get("body")
    return parsed if isinstance(parsed, dict) else {}


async def read_multipart(request: web.Request) -> dict[str, Any]:
    from aiohttp import BodyPartReader

    reader = await request.multipart()
    parts: list[dict[str, Any]] = []
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):  # a nested multipart: not something we get
            continue
        digest = hashlib.sha256()
        size = 0
        head = bytearray()
        while True:
            chunk = await part.read_chunk(64 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            if len(head) < 1024:
                head += chunk[: 1024 - len(head)]
        total += size
        info: dict[str, Any] = {
            "name": part.name,
            "filename": part.filename,
            "content_type": part.headers.get("Content-Type"),
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
        if part.filename is None and size <= 1024:
            info["value"] = head.decode("utf-8", errors="replace")
        parts.append(info)
    return {"bytes": total, "parts": parts}


def embedding_for(text: str, dims: int) -> list[float]:
    """A deterministic unit-ish vector derived from the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    return [round(v, 6) for v in out[:dims]]


def tokens_text(n: int) -> list[str]:
    return [f"tok{i} " for i in range(n)]


# -- the server --------------------------------------------------------------------------------

class FakeUpstream:
    def __init__(self, opts: Options):
        self.opts = opts
        self.stats = Stats()
        self.port = opts.port
        self._record_fd: int | None = None
        if opts.record:
            self._record_fd = os.open(opts.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def fake_block(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for k, v in request.headers.items():
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        return {
            "pid": os.getpid(),
            "port": self.port,
            "model": self.opts.model,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "method": request.method,
            "headers": headers,
            **body,
        }

    def record(self, path: str, start: float, end: float, raw_path: str = "") -> None:
        if self._record_fd is None:
            return
        line = json.dumps({"pid": os.getpid(), "model": self.opts.model, "path": path,
                           "raw_path": raw_path, "start": start, "end": end}) + "\n"
        os.write(self._record_fd, line.encode())

    def build_app(self) -> web.Application:
        from aiohttp import web

        @web.middleware
        async def accounting(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.startswith(UNCOUNTED):
                resp: web.StreamResponse = await handler(request)
                return resp
            st = self.stats
            st.requests += 1
            st.by_path[request.path] = st.by_path.get(request.path, 0) + 1
            st.current += 1
            st.max = max(st.max, st.current)
            start = time.time()
            try:
                resp = await handler(request)
                return resp
            finally:
                st.current -= 1
                self.record(request.path, start, time.time(), request.raw_path)

        app = web.Application(middlewares=[accounting], client_max_size=1024**3)
        app.router.add_get("/health", self.health)
        app.router.add_get("/fake/stats", self.get_stats)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/models", self.models)
        app.router.add_get("/props", self.props)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/images/edits", self.image_edits)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    def json(self, request: web.Request, body: dict[str, Any], payload: dict[str, Any],
             status: int = 200) -> web.Response:
        from aiohttp import web

        payload["fake"] = self.fake_block(request, body)
        return web.json_response(payload, status=status)

    async def delay(self, body: dict[str, Any]) -> None:
        seconds = self.opts.response_delay
        parsed = body.get("body")
        if isinstance(parsed, dict) and isinstance(parsed.get("fake_delay"), int | float):
            seconds = float(parsed["fake_delay"])
        if seconds > 0:
            await asyncio.sleep(seconds)

    def token_count(self, body: dict[str, Any]) -> int:
        parsed = body.get("body")
        if isinstance(parsed, dict):
            n = parsed.get("max_tokens", parsed.get("max_completion_tokens"))
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                return n
        return self.opts.tokens

    # -- handlers -------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.opts.fail == "never-healthy":
            return web.json_response({"status": "loading model"}, status=503)
        return web.json_response({"status": "ok"})

    async def get_stats(self, request: web.Request) -> web.Response:
        st = self.stats
        return self.json(request, {}, {"requests": st.requests, "current": st.current,
                                       "max": st.max, "by_path": st.by_path})

    async def models(self, request: web.Request) -> web.Response:
        await self.delay({})
        data = [{"id": self.opts.model, "object": "model", "created": 0, "owned_by": "fake"}]
        return self.json(request, {}, {"object": "list", "data": data})

    async def props(self, request: web.Request) -> web.Response:
        """llama-server's server properties (the fields clients read), plus the echo."""
        await self.delay({})
        name = self.opts.model
        return self.json(request, {}, {
            "default_generation_settings": {"params": {"n_predict": -1}, "n_ctx": 4096},
            "total_slots": 1, "model_alias": name, "model_path": f"/models/{name}.gguf",
            "modalities": {"vision": False, "video": False, "audio": False},
            "build_info": "fake", "is_sleeping": False})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self.generate(request, chat=False)

    def timings(self, prompt_n: int, predicted_n: int, t0: float, t1: float) -> dict[str, Any]:
        """llama-server's `timings`: prompt time t0..t1 (arrival to first token), then the
        generation time until now, at least 1 ms per token."""
        prompt_ms = max(0.1, (t1 - t0) * 1000)
        predicted_ms = max((time.monotonic() - t1) * 1000, float(predicted_n))
        return {
            "cache_n": 0,
            "prompt_n": prompt_n, "prompt_ms": round(prompt_ms, 3),
            "prompt_per_second": round(prompt_n * 1000 / prompt_ms, 3),
            "predicted_n": predicted_n, "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": round(predicted_n * 1000 / predicted_ms, 3)
            if predicted_ms else 0.0,
        }

    async def generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        t0 = time.monotonic()
        body = await read_body(request)
        parsed = _json_object(body)
        await self.delay(body)
        n = self.token_count(body)
        toks = tokens_text(n)
        model = parsed.get("model") or self.opts.model
        ident = f"{'chatcmpl' if chat else 'cmpl'}-fake-{self.stats.requests}"
        usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
        extra = {"metrics": VLLM_METRICS} if self.opts.vllm_metrics else {}
        if parsed.get("stream"):
            include_usage = bool((parsed.get("stream_options") or {}).get("include_usage"))
            return await self.stream(request, body, ident, model, toks, chat, usage, include_usage,
                                     t0, extra)
        t1 = time.monotonic()
        if self.opts.token_delay > 0 and n:
            await asyncio.sleep(self.opts.token_delay * n)
        text = "".join(toks)
        obj = "chat.completion" if chat else "text_completion"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        payload = {"id": ident, "object": obj, "created": int(time.time()), "model": model,
                   "choices": [choice], "usage": usage, **extra}
        if self.opts.timings:
            payload["timings"] = self.timings(usage["prompt_tokens"], n, t0, t1)
        return self.json(request, body, payload)

    async def stream(self, request: web.Request, body: dict[str, Any], ident: str, model: str,
                     toks: list[str], chat: bool, usage: dict[str, int],
                     include_usage: bool, t0: float, last: dict[str, Any]) -> web.StreamResponse:
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        def chunk(delta: dict[str, Any] | str | None, finish: str | None = None,
                  extra: dict[str, Any] | None = None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = delta if isinstance(delta, dict) else {}
            else:
                choice["text"] = delta if isinstance(delta, str) else ""
            data: dict[str, Any] = {"id": ident, "object": obj, "created": created,
                                    "model": model, "choices": [choice]}
            if extra:
                data.update(extra)
            return f"data: {json.dumps(data)}\n\n".encode()

        first: dict[str, Any] = {"fake": self.fake_block(request, body)}
        t1 = time.monotonic()
        if chat:
            await resp.write(chunk({"role": "assistant", "content": None}, extra=first))
        crash_at = len(toks) // 2 if self.opts.fail == "crash-mid-stream" else -1
        for i, tok in enumerate(toks):
            if i == crash_at:
                say(f"fake upstream: crashing mid-stream after {i} tokens", err=True)
                os._exit(3)
            if self.opts.token_delay > 0:
                await asyncio.sleep(self.opts.token_delay)
            extra = first if (not chat and i == 0) else None
            await resp.write(chunk({"content": tok} if chat else tok, extra=extra))
        if crash_at == 0:  # zero tokens: crash before the end all the same
            os._exit(3)
        if self.opts.timings:  # as llama-server: the finishing chunk reports usage and speed
            last = {**last, "usage": usage,
                    "timings": self.timings(usage["prompt_tokens"], len(toks), t0, t1)}
        await resp.write(chunk({} if chat else "", finish="stop", extra=last))
        if include_usage:
            data = {"id": ident, "object": obj, "created": created, "model": model,
                    "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(data)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        await self.delay(body)
        parsed = _json_object(body)
        inputs = parsed.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        dims = parsed.get("dimensions")
        if not isinstance(dims, int):
            dims = 8
        data = [{"object": "embedding", "index": i,
                 "embedding": embedding_for(json.dumps(item), dims)} for i, item in enumerate(items)]
        return self.json(request, body, {
            "object": "list", "data": data, "model": parsed.get("model") or self.opts.model,
            "usage": {"prompt_tokens": len(items), "total_tokens": len(items)}})

    async def transcriptions(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        await self.delay(body)
        return self.json(request, body, {"text": f"fake transcription of {body.get('bytes', 0)} bytes"})

    async def image_edits(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        await self.delay(body)
        return self.json(request, body, {"created": int(time.time()), "data": [{"b64_json": ""}]})

    async def echo(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        await self.delay(body)
        return self.json(request, body, {"echo": True})


async def serve(opts: Options) -> None:
    from aiohttp import web

    fake = FakeUpstream(opts)
    runner = web.AppRunner(fake.build_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, opts.host, opts.port, reuse_address=True)
    await site.start()
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        fake.port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def on_term() -> None:
        if opts.ignore_sigterm:
            say("fake upstream: ignoring SIGTERM")
            return
        say("fake upstream: SIGTERM, exiting")
        if not stopped.done():
            stopped.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    say(f"fake upstream {opts.model!r} pid {os.getpid()} listening on "
        f"http://{opts.host}:{fake.port} after {(time.monotonic() - _T0) * 1000:.0f} ms")
    await stopped
    if opts.drain_on_sigterm > 0:
        deadline = time.monotonic() + opts.drain_on_sigterm
        while runner.server is not None and runner.server.connections:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        left = len(runner.server.connections) if runner.server is not None else 0
        say(f"fake upstream: {left} client connection(s) still open at exit")
    os._exit(0)  # no graceful drain (unless asked): a real model server dies promptly too


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    say(f"fake upstream {opts.model!r} pid {os.getpid()} loading (start delay {opts.start_delay:g}s)")
    if opts.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: say("fake upstream: ignoring SIGTERM"))
    if opts.fail == "exit-on-start":
        time.sleep(max(0.0, opts.start_delay))
        say(f"error: fake upstream {opts.model!r} failed to load the model (exit-on-start)", err=True)
        sys.exit(1)
    import aiohttp.web  # noqa: F401  (the slow import overlaps the simulated load time)

    remaining = opts.start_delay - (time.monotonic() - _T0)
    if remaining > 0:
        time.sleep(remaining)
    try:
        asyncio.run(serve(opts))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        say(f"error: fake upstream cannot listen on {opts.host}:{opts.port}: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
