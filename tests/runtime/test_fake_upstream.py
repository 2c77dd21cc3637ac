"""The fake upstream: an OpenAI-compatible server that tells tests what reached it.

Every test talks to a real `runtime.fake_upstream` process over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


class Fake:
    """A running fake upstream process, killed on close."""

    def __init__(self, *args: str, script: list[str] | None = None):
        cmd = script or [PY, "-m", "llama_swap.runtime.fake_upstream"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.port = 0

    def wait_listening(self) -> Fake:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return self
        raise AssertionError(f"fake never listened: {self.lines} {self.proc.stderr.read()}")  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    f = Fake("--model", "m1", "--tokens", "3")
    try:
        yield f.wait_listening()
    finally:
        f.close()


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[Fake] = []

    def make(*args: str, script: list[str] | None = None) -> Fake:
        f = Fake(*args, script=script)
        started.append(f)
        return f

    try:
        yield make
    finally:
        for f in started:
            f.close()


async def post_json(url: str, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, **kw) as r:
        return r.status, await r.json()


async def sse_events(url: str, body: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


# -- endpoints ------------------------------------------------------------------------------

async def test_health_and_models(fake: Fake) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(fake.url + "/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with s.get(fake.url + "/v1/models") as r:
            body = await r.json()
    assert [m["id"] for m in body["data"]] == ["m1"]
    assert body["fake"]["pid"] == fake.proc.pid and body["fake"]["port"] == fake.port


async def test_chat_completion_echoes_what_reached_the_upstream(fake: Fake) -> None:
    req = {"model": "alias-of-m1", "messages": [{"role": "user", "content": "hi"}]}
    status, body = await post_json(fake.url + "/v1/chat/completions?x=1", req,
                                   headers={"X-Test": "yes"})
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == "alias-of-m1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "tok0 tok1 tok2 "}
    assert body["usage"]["completion_tokens"] == 3
    echo = body["fake"]
    assert echo["body"] == req and echo["method"] == "POST" and echo["query"] == "x=1"
    assert echo["path"] == "/v1/chat/completions" and echo["model"] == "m1"
    assert echo["headers"]["X-Test"] == "yes"


async def test_chat_stream_is_sse_with_role_tokens_finish_usage_and_done(fake: Fake) -> None:
    events = await sse_events(fake.url + "/v1/chat/completions", {
        "model": "m1", "messages": [], "stream": True, "max_tokens": 4,
        "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert chunks[0]["fake"]["body"]["max_tokens"] == 4
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:5]]
    assert tokens == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert chunks[5]["choices"][0]["finish_reason"] == "stop"
    assert chunks[6]["choices"] == [] and chunks[6]["usage"]["completion_tokens"] == 4
    assert len(chunks) == 7


async def test_stream_without_include_usage_has_no_usage_chunk(fake: Fake) -> None:
    events = await sse_events(fake.url + "/v1/chat/completions", {"stream": True})
    assert events[-1] == "[DONE]" and not any("usage" in e for e in events[:-1])


async def test_completions_plain_and_streamed(fake: Fake) -> None:
    status, body = await post_json(fake.url + "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert status == 200 and body["choices"][0]["text"] == "tok0 tok1 "
    events = await sse_events(fake.url + "/v1/completions", {"prompt": "x", "stream": True})
    assert [e["choices"][0]["text"] for e in events[:3]] == ["tok0 ", "tok1 ", "tok2 "]
    assert events[0]["fake"]["path"] == "/v1/completions" and events[-1] == "[DONE]"


async def test_embeddings_are_deterministic_per_input(fake: Fake) -> None:
    _, a = await post_json(fake.url + "/v1/embeddings", {"input": ["a", "b", "a"]})
    _, b = await post_json(fake.url + "/v1/embeddings", {"input": "a", "dimensions": 4})
    vecs = [d["embedding"] for d in a["data"]]
    assert len(vecs[0]) == 8 and vecs[0] == vecs[2] != vecs[1]
    assert b["data"][0]["embedding"] == vecs[0][:4]


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/images/edits"])
async def test_multipart_uploads_are_hashed_part_by_part(fake: Fake, path: str) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("file", blob, filename="clip.wav", content_type="audio/wav")
    async with aiohttp.ClientSession() as s, s.post(fake.url + path, data=form) as r:
        assert r.status == 200
        body = await r.json()
    parts = {p["name"]: p for p in body["fake"]["parts"]}
    assert parts["model"]["value"] == "whisper"
    assert parts["file"]["filename"] == "clip.wav" and parts["file"]["content_type"] == "audio/wav"
    assert parts["file"]["bytes"] == len(blob)
    assert parts["file"]["sha256"] == hashlib.sha256(blob).hexdigest()


async def test_unknown_paths_are_echoed_with_a_body_hash(fake: Fake) -> None:
    async with aiohttp.ClientSession() as s, s.put(fake.url + "/some/thing", data=b"hello") as r:
        assert r.status == 200
        body = await r.json()
    echo = body["fake"]
    assert body["echo"] is True and echo["method"] == "PUT" and echo["path"] == "/some/thing"
    assert echo["bytes"] == 5 and echo["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


async def test_stats_report_current_and_max_concurrency(spawn: Any) -> None:
    f = spawn("--response-delay", "30").wait_listening()
    async with aiohttp.ClientSession() as s:
        async def stats() -> dict[str, Any]:
            async with s.get(f.url + "/fake/stats") as r:
                return await r.json()

        slow = [asyncio.ensure_future(s.get(f.url + "/v1/models")) for _ in range(3)]
        try:
            async with asyncio.timeout(20):
                while (await stats())["current"] < 3:
                    await asyncio.sleep(0.02)
        finally:
            for t in slow:
                t.cancel()
        st = await stats()
    assert st["max"] == 3 and st["requests"] == 3 and st["by_path"] == {"/v1/models": 3}


async def test_record_appends_one_json_line_per_served_request(spawn: Any, tmp_path: Path) -> None:
    record = tmp_path / "served.jsonl"
    f = spawn("--model", "rec", "--record", str(record)).wait_listening()
    await post_json(f.url + "/v1/chat/completions", {"messages": []})
    await post_json(f.url + "/v1/embeddings", {"input": "x"})
    async with aiohttp.ClientSession() as s, s.get(f.url + "/health"):
        pass  # health polls are not served work
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["pid"], r["model"], r["path"]) for r in lines] == [
        (f.proc.pid, "rec", "/v1/chat/completions"), (f.proc.pid, "rec", "/v1/embeddings")]
    assert all(r["start"] <= r["end"] for r in lines)


# -- start-up, signals and failure modes ----------------------------------------------------

def test_start_delay_holds_back_listening(spawn: Any) -> None:
    f = spawn("--start-delay", "0.4").wait_listening()
    ms = int(re.search(r"after (\d+) ms", f.lines[-1]).group(1))  # type: ignore[union-attr]
    assert ms >= 400


def test_exit_on_start_prints_an_error_and_exits_1_without_listening(spawn: Any) -> None:
    f = spawn("--fail", "exit-on-start")
    out, err = f.proc.communicate(timeout=20)
    assert f.proc.returncode == 1
    assert "failed to load the model" in err and "listening" not in out


async def test_never_healthy_listens_but_health_is_503(spawn: Any) -> None:
    f = spawn("--fail", "never-healthy").wait_listening()
    async with aiohttp.ClientSession() as s:
        async with s.get(f.url + "/health") as r:
            assert r.status == 503
        async with s.get(f.url + "/v1/models") as r:
            assert r.status == 200


async def test_crash_mid_stream_kills_the_process_during_the_response(spawn: Any) -> None:
    f = spawn("--fail", "crash-mid-stream", "--tokens", "6").wait_listening()
    got: list[str] = []
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as s:
            async with s.post(f.url + "/v1/chat/completions", json={"stream": True}) as r:
                assert r.status == 200
                async for raw in r.content:
                    got.append(raw.decode())
    assert any("tok2 " in line for line in got) and not any("[DONE]" in line for line in got)
    assert f.proc.wait(10) == 3


def test_sigterm_exits_0_unless_ignored(spawn: Any) -> None:
    polite = spawn().wait_listening()
    stubborn = spawn("--ignore-sigterm").wait_listening()
    polite.proc.send_signal(signal.SIGTERM)
    stubborn.proc.send_signal(signal.SIGTERM)
    assert polite.proc.wait(10) == 0
    assert stubborn.proc.stdout is not None
    assert "ignoring SIGTERM" in stubborn.proc.stdout.readline()
    assert stubborn.proc.poll() is None


def test_the_checkout_wrapper_and_the_console_script_run_the_same_server(spawn: Any) -> None:
    wrapped = spawn(script=[PY, str(REPO / "tests" / "upstream_fake.py")]).wait_listening()
    assert wrapped.port
    script = Path(PY).parent / "swap-fake-upstream"
    if script.exists():
        assert spawn(script=[str(script)]).wait_listening().port


async def test_timings_report_speed_like_llama_server_in_bodies_and_last_chunks(spawn: Any) -> None:
    f = spawn("--model", "t", "--tokens", "4", "--token-delay", "0.01", "--timings").wait_listening()
    status, body = await post_json(f.url + "/v1/chat/completions", {"messages": []})
    assert status == 200 and body["usage"]["completion_tokens"] == 4
    timings = body["timings"]
    assert (timings["prompt_n"], timings["predicted_n"], timings["cache_n"]) == (1, 4, 0)
    assert timings["predicted_ms"] >= 4  # at least 1 ms per token, so the speed is finite
    assert timings["predicted_per_second"] == pytest.approx(
        4 * 1000 / timings["predicted_ms"], rel=1e-3)
    events = await sse_events(f.url + "/v1/chat/completions", {"stream": True})
    finishing = [e for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finishing) == 1  # the finishing chunk carries usage and timings, unasked
    assert finishing[0]["usage"]["completion_tokens"] == 4
    assert finishing[0]["timings"]["predicted_n"] == 4


async def test_without_timings_the_answers_carry_none(fake: Fake) -> None:
    _, body = await post_json(fake.url + "/v1/chat/completions", {"messages": []})
    events = await sse_events(fake.url + "/v1/chat/completions", {"stream": True})
    assert "timings" not in body and not any("timings" in e for e in events[:-1])
