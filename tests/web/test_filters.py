"""Filters: useModelName, stripParams, setParams, setParamsByID, peers; bytes untouched otherwise."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llama_swap.compiler.plan import Peer
from llama_swap.runtime.http.aio.extract import extract
from llama_swap.runtime.http.request.filters import (
    delete_path,
    filter_request,
    filters_for,
    set_path,
    split_path,
)

from .conftest import filters, make_plan, model

PLAN = make_plan(
    model("llama", useModelName="meta/llama-3", aliases=("fast",),
          filters=filters(strip=("top_k", "nested.drop"), set_={"temperature": 0.2, "a.b": 1},
                          by_id={"fast": {"temperature": 0.9, "reasoning.effort": "low"}})),
    model("plain"),
    model("whisper", useModelName="whisper-1"),
    peers=(Peer(id="cloud", proxy="http://127.0.0.1:1", models=("gpt-x",),
                filters=filters(strip=("seed",), set_={"provider": "p"})),),
)


def test_paths() -> None:
    assert split_path(r"a.b\.c.0") == ["a", "b.c", "0"]
    doc: dict[str, Any] = {"a": {"x": 1}, "l": [1, 2], "s": 5}
    set_path(doc, "a.y.z", True)
    set_path(doc, "l.-1", 3)
    set_path(doc, "l.5", 9)
    set_path(doc, "s.t", 1)
    assert doc == {"a": {"x": 1, "y": {"z": True}}, "l": [1, 2, 3, None, None, 9], "s": {"t": 1}}
    delete_path(doc, "a.x")
    delete_path(doc, "l.0")
    delete_path(doc, "missing.path")
    assert doc["a"] == {"y": {"z": True}} and doc["l"][0] == 2


def test_filter_lookup() -> None:
    assert filters_for(PLAN, "fast").use_model_name == "meta/llama-3"
    peer_spec = filters_for(PLAN, "gpt-x")
    assert peer_spec is not None and peer_spec.use_model_name == "" and peer_spec.filters.stripParams
    assert filters_for(PLAN, "unknown") is None
    assert filters_for(PLAN, "plain").empty


async def post(serve, raw: bytes | aiohttp.FormData, ctype: str | None = "application/json"):
    captured: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        req = filter_request(PLAN, await extract(request, PLAN))
        captured["req"] = req
        captured["bytes"] = b"".join([c async for c in req.body.chunks()])
        captured["length"] = req.body.length
        return web.Response()

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    client = await serve(app)
    headers = {"Content-Type": ctype} if ctype else {}
    await client.post("/v1/x", data=raw, headers=headers)
    return captured


async def test_local_filters_in_order(serve) -> None:
    raw = json.dumps({"model": "llama", "top_k": 5, "nested": {"drop": 1, "keep": 2}, "temperature": 1})
    got = await post(serve, raw.encode())
    assert json.loads(got["bytes"]) == {
        "model": "meta/llama-3", "nested": {"keep": 2}, "temperature": 0.2, "a": {"b": 1},
    }
    assert got["req"].model_id == "llama" and got["length"] == len(got["bytes"])


async def test_set_params_by_id_uses_the_requested_name_and_wins(serve) -> None:
    got = await post(serve, b'{"model":"fast","temperature":1}')
    doc = json.loads(got["bytes"])
    assert doc["temperature"] == 0.9 and doc["reasoning"] == {"effort": "low"}
    assert doc["model"] == "meta/llama-3" and got["req"].model_id == "llama"


async def test_peer_filters_without_rename(serve) -> None:
    got = await post(serve, b'{"model":"gpt-x","seed":1}')
    assert json.loads(got["bytes"]) == {"model": "gpt-x", "provider": "p"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{ "model" : "plain",\n  "x": [1, 2.50] }',  # no filters configured
        b'{"model":"unknown-model",  "x":1}',  # nothing configured for it
        b'{ "model": "gpt-x", "provider": "p" }',  # filters apply but change nothing
    ],
)
async def test_bytes_pass_untouched_when_nothing_changes(serve, raw: bytes) -> None:
    got = await post(serve, raw)
    assert got["bytes"] == raw


async def test_multipart_model_rewritten_in_place(serve) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "whisper")
    form.add_field("language", "en")
    form.add_field("file", b"\x01" * 100_000, filename="a.wav")
    got = await post(serve, form, ctype=None)
    body = got["bytes"]
    assert b'name="model"\r\n\r\nwhisper-1\r\n' in body
    assert body.index(b'"model"') < body.index(b'"language"') < body.index(b'"file"')
    assert got["length"] == len(body) and body.count(b"\x01") == 100_000


async def test_multipart_without_rename_is_untouched(serve) -> None:
    form = aiohttp.FormData()
    form.add_field("model", "plain")
    form.add_field("file", b"zz", filename="a.wav")
    got = await post(serve, form, ctype=None)
    assert b'name="model"\r\n\r\nplain\r\n' in got["bytes"]



def test_a_deeply_nested_body_is_filtered_at_any_depth_the_parser_accepted() -> None:
    from llama_swap.runtime.http.request.extract import from_json_body

    depth = 600  # json.loads follows it; copy.deepcopy gave up (RecursionError, a 500)
    raw = b'{"model":"llama","top_k":1,"x":' + b"[" * depth + b"]" * depth + b"}"
    req = filter_request(PLAN, from_json_body(PLAN, raw))
    sent = json.loads(req.body.data)  # type: ignore[attr-defined]
    assert "top_k" not in sent and sent["model"] == "meta/llama-3"
    assert json.dumps(sent["x"]) == "[" * depth + "]" * depth
