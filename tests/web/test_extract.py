"""Model extraction from JSON, multipart (streamed), forms, GET queries and /upstream paths."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llama_swap.runtime.http.aio.extract import extract
from llama_swap.runtime.http.request.body import SpooledBody
from llama_swap.runtime.http.request.extract import (
    find_model_in_path,
    json_bool,
    json_string,
)

from .conftest import make_plan, model, real_stack

PLAN = make_plan(
    model("llama", aliases=("gpt-4o",)),
    model("org/model"),
    model("org/model/v2"),
    model("whisper"),
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/llama/v1/models", ("llama", "llama", "/v1/models")),
        ("/gpt-4o/health", ("gpt-4o", "llama", "/health")),
        ("/org/model/props", ("org/model", "org/model", "/props")),
        ("/org/model/v2/props", ("org/model/v2", "org/model/v2", "/props")),
        ("/llama", ("llama", "llama", "/")),
        ("/llama/", ("llama", "llama", "/")),
        ("//llama//x/", ("llama", "llama", "//x/")),
        ("/nope/x", None),
    ],
)
def test_find_model_in_path_longest_prefix(path: str, expected: Any) -> None:
    found = find_model_in_path(PLAN, path)
    assert (found and (found.name, found.model_id, found.remaining)) == expected


def test_gjson_like_coercions() -> None:
    assert json_string(None) == "" and json_string(5) == "5" and json_string(True) == "true"
    assert json_bool(True) and json_bool("true") and json_bool(1) and not json_bool("no")


async def echo_extracted(request: web.Request) -> web.Response:
    req = await extract(request, PLAN)
    chunks = [c async for c in req.body.chunks()]
    req.body.close()
    return web.json_response(
        {
            "model": req.model,
            "model_id": req.model_id,
            "streaming": req.streaming,
            "length": req.body.length,
            "body": b"".join(chunks).decode("latin-1"),
            "spooled": isinstance(req.body, SpooledBody),
        }
    )


@pytest.fixture
async def client(serve):
    app = web.Application(middlewares=real_stack())
    app.router.add_route("*", "/{tail:.*}", echo_extracted)
    return await serve(app)


async def test_json_body(client) -> None:
    raw = json.dumps({"model": "gpt-4o", "stream": True, "messages": []})
    r = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    got = await r.json()
    assert got["model"] == "gpt-4o" and got["model_id"] == "llama" and got["streaming"] is True
    assert got["body"] == raw


async def test_unknown_names_pass_through_unresolved(client) -> None:
    r = await client.post("/v1/embeddings", json={"model": "peer-only"})
    got = await r.json()
    assert got["model"] == got["model_id"] == "peer-only" and got["streaming"] is False


@pytest.mark.parametrize(
    "raw", [b"{}", b"not json", b'{"model": ""}', b'{"model": null}', b"[1]"]
)
async def test_no_model_is_404(client, raw: bytes) -> None:
    r = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 404
    assert await r.json() == {"src": "llama-swap", "error": {"message": "no model id could be identified", "type": "invalid_request_error", "param": None, "code": "not_found"}}


async def test_get_query(client) -> None:
    got = await (await client.get("/v1/audio/voices?model=whisper&stream=true")).json()
    assert (got["model"], got["streaming"]) == ("whisper", True)
    assert (await client.get("/sdapi/v1/loras")).status == 404


async def test_urlencoded_form_and_query_fallback(client) -> None:
    got = await (await client.post("/completion", data={"model": "llama", "x": "1"})).json()
    assert got["model"] == "llama" and got["body"] == "model=llama&x=1"
    got = await (await client.post("/completion?model=whisper", data={"x": "1"})).json()
    assert got["model"] == "whisper"


async def test_multipart_is_spooled_only_up_to_the_model_field(client) -> None:
    data = aiohttp.FormData()
    data.add_field("model", "whisper")
    data.add_field("file", b"\x00" * 300_000, filename="a.wav", content_type="audio/wav")
    r = await client.post("/v1/audio/transcriptions", data=data)
    got = await r.json()
    assert got["model"] == "whisper" and got["spooled"] is True
    assert len(got["body"]) == got["length"] and got["body"].count("\x00") == 300_000


async def test_multipart_model_after_the_file_and_query_fallback(client) -> None:
    data = aiohttp.FormData()
    data.add_field("file", b"abc" * 1000, filename="a.png")
    data.add_field("model", "org/model")
    got = await (await client.post("/v1/images/edits", data=data)).json()
    assert got["model"] == "org/model" and got["body"].endswith("--\r\n")
    data = aiohttp.FormData()
    data.add_field("file", b"abc", filename="a.png")
    got = await (await client.post("/v1/images/edits?model=llama", data=data)).json()
    assert got["model"] == "llama"
    data = aiohttp.FormData()
    data.add_field("file", b"abc", filename="a.png")
    assert (await client.post("/v1/images/edits", data=data)).status == 404


async def test_malformed_multipart_has_no_model_as_in_the_original(client) -> None:
    r = await client.post(
        "/v1/audio/transcriptions",
        data=b"--b\r\n" + b"x" * 20000,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status == 404
    assert (await r.json())["error"]["message"] == "no model id could be identified"

