"""Clients written for llama-server work through the proxy, on both front doors, against
the fake upstream (which answers `/props` as llama-server does):

- `GET /props?model=<name>` names its model in the query, loads it like any other model
  request and reaches that model's server as `/props` with the query as the client sent it;
- without a model, or with an unknown one, it is a 404 in the OpenAI error shape;
- `GET /models` is `GET /v1/models`, key and Origin echo included;
- each record's `status.value` is `unloaded` until the model's process starts and `loaded`
  from then on (its alias records too); `meta.n_ctx` is the configured context length.

(The same against a real llama-server: tests/e2e/test_llama_server.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from yarl import URL

from llama_swap.compiler.plan import Capabilities
from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan

KEY = "sk-compat"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def start(proxy: Any, record_file: Path, door: tuple[str, ...]) -> Any:
    """Two models, `chat` with an alias and a 8192-token context, `plain` with neither."""
    chat = dataclasses.replace(
        fake_model("chat", record_file, aliases=("chat-alias",)),
        capabilities=Capabilities(context=8192),
    )
    plain = fake_model("plain", record_file)
    plan = surface_plan([chat, plain], apiKeys=(KEY,), includeAliasesInList=True)
    return proxy(plan, *door)


def by_id(raw: bytes) -> dict[str, dict[str, Any]]:
    return {rec["id"]: rec for rec in json.loads(raw)["data"]}


def timeless(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records without `created` (the clock's second may tick between two lists)."""
    return {k: {f: v for f, v in r.items() if f != "created"} for k, r in records.items()}


@DOORS
async def test_props_loads_the_named_model_and_reaches_its_server(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        url = URL(p.url + "/props?model=chat-alias&x=%2F1", encoded=True)  # sent as written
        status, _, raw = await fetch(s, "GET", url)
        assert status == 200
        props = json.loads(raw)
        assert props["default_generation_settings"]["n_ctx"] == 4096  # the server's own answer
        assert props["model_alias"] == "chat"  # the fake names the model it serves
        assert (props["fake"]["path"], props["fake"]["method"]) == ("/props", "GET")
        assert props["fake"]["raw_path"] == "/props?model=chat-alias&x=%2F1"


@DOORS
async def test_props_without_a_known_model_is_not_found(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        status, _, raw = await fetch(s, "GET", p.url + "/props")
        assert (status, json.loads(raw)["error"]) == (404, {
            "message": "no model id could be identified", "type": "invalid_request_error",
            "param": None, "code": "not_found"})
        status, _, raw = await fetch(s, "GET", p.url + "/props?model=ghost")
        assert status == 404
        assert json.loads(raw)["error"]["message"] == "no local server found for requested model: ghost"
        status, _, raw = await fetch(s, "GET", p.url + "/props?model=chat", headers={"Authorization": "x"})
        assert status == 401
    assert p.records() == []  # nothing reached a model server, nothing was started


@DOORS
async def test_models_is_the_model_list_and_status_follows_the_process(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        status, headers, raw = await fetch(s, "GET", p.url + "/models", headers={"Origin": "http://ui"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://ui"
        before = by_id(raw)
        _, _, raw_v1 = await fetch(s, "GET", p.url + "/v1/models")
        assert timeless(by_id(raw_v1)) == timeless(before)
        assert list(before) == ["chat", "chat-alias", "plain"]
        assert {k: r["status"] for k, r in before.items()} == {
            "chat": {"value": "unloaded"}, "chat-alias": {"value": "unloaded"}, "plain": {"value": "unloaded"}}
        assert before["chat"]["meta"] == {
            "llamaswap": {"type": "model", "aliases": ["chat-alias"]}, "n_ctx": 8192}
        assert before["chat"]["context_length"] == 8192
        assert before["chat-alias"]["meta"] == {
            "llamaswap": {"type": "alias", "modelID": "chat"}, "n_ctx": 8192}
        assert before["plain"]["meta"] == {"llamaswap": {"type": "model"}}

        status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                   json={"model": "chat", "messages": []})
        assert status == 200
        _, _, raw = await fetch(s, "GET", p.url + "/models")
        after = by_id(raw)
        assert {k: r["status"]["value"] for k, r in after.items()} == {
            "chat": "loaded", "chat-alias": "loaded", "plain": "unloaded"}
        status, _, raw = await fetch(s, "GET", p.url + "/models", headers={"Authorization": "x"})
        assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"


@DOORS
async def test_the_openai_client_lists_models_with_their_status(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    async with openai.AsyncOpenAI(base_url=p.url + "/v1", api_key=KEY, max_retries=0) as client:
        models = [m async for m in client.models.list()]
    assert [m.id for m in models] == ["chat", "chat-alias", "plain"]
    assert all(m.model_extra and m.model_extra["status"] == {"value": "unloaded"} for m in models)


@DOORS
async def test_vllm_metrics_give_the_activity_log_its_rates(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    """The fake answers like vLLM (`--vllm-metrics`: ttft 50 ms, inter-token 10 ms, 8 drafted
    / 6 accepted): the activity log shows 1 prompt token / 0.05 s and 1000 / 10 tokens/s."""
    model = fake_model("vllm", record_file, "--vllm-metrics")
    p = proxy(surface_plan([model]), *door)
    async with aiohttp.ClientSession() as s:
        for stream in (False, True):
            status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions", json={
                "model": "vllm", "messages": [], "max_tokens": 3, "stream": stream,
                "stream_options": {"include_usage": True}})
            assert status == 200
        while len(entries := json.loads((await fetch(s, "GET", p.url + "/api/metrics"))[2])) < 2:
            await asyncio.sleep(0.05)
    for entry in entries:
        assert entry["tokens"] == {"cache_tokens": -1, "draft_tokens": 8, "draft_acc_tokens": 6,
                                   "input_tokens": 1, "output_tokens": 3,
                                   "prompt_per_second": 20.0, "tokens_per_second": 100.0}
