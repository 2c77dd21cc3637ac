"""Today's clients work unchanged: answers a client can act on, and paths that arrive as sent.

- A request the scheduler refuses (over a model's concurrency limit) gets a real 429 with
  `Retry-After` and a JSON body, never a 200 loading-state stream that ends in an error:
  admission is decided before the loading stream opens.
- `/upstream/<model>/...` hands the model's server the rest of the path byte for byte
  (`%2F`, `%20`, encoded UTF-8 and the query string stay as the client sent them).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import yarl

from llama_swap.runtime.http.aio.routes.upstream import raw_suffix
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat


async def test_a_streaming_request_over_the_limit_gets_a_plain_429_not_a_loading_stream(
    proxy: Any, record_file: Path
) -> None:
    model = replace(
        fake_model("a", record_file, "--start-delay", "1.5", "--response-delay", "1", concurrency=1),
        sendLoadingState=True,
    )
    p = proxy(make_plan([model], scheduler="fifo"))
    async with aiohttp.ClientSession() as s:
        holder = asyncio.ensure_future(post_chat(s, p.url, "a"))  # waits for the load: counts
        await asyncio.sleep(0.4)
        async with s.post(
            f"{p.url}/v1/chat/completions",
            json={"model": "a", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            body = await resp.read()
            assert resp.status == 429, body[:300]
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["Content-Type"].startswith("application/json")
            assert isinstance(json.loads(body), dict)
        assert (await holder)[0] == 200


async def test_upstream_paths_keep_their_percent_encoding_and_query(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("a", record_file)]))
    raw = "/files/org%2Frepo/my%20file%E2%9C%93?q=a%2Fb%20c&x=%26y"
    async with aiohttp.ClientSession() as s:
        url = yarl.URL(f"{p.url}/upstream/a{raw}", encoded=True)
        async with s.get(url) as resp:
            assert resp.status == 200, await resp.text()
            echoed = (await resp.json())["fake"]
    assert echoed["raw_path"] == raw
    assert [r["raw_path"] for r in p.records() if r["path"].startswith("/files")] == [raw]


async def test_an_encoded_model_name_is_found_and_the_suffix_still_arrives_raw(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("org/m", record_file)]))
    async with aiohttp.ClientSession() as s:
        url = yarl.URL(f"{p.url}/upstream/org%2Fm/v1/x%2Fy", encoded=True)
        async with s.get(url) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["fake"]["raw_path"] == "/v1/x%2Fy"


# -- the suffix rule itself (pure) ------------------------------------------------------


def test_raw_suffix_keeps_what_follows_the_decoded_prefix_encoded() -> None:
    assert raw_suffix("/upstream/a/x%2Fy%20z", "/upstream/a") == "/x%2Fy%20z"
    assert raw_suffix("/upstream/org%2Fm/v1/%252F", "/upstream/org/m") == "/v1/%252F"
    assert raw_suffix("/upstream/caf%C3%A9/p%E2%9C%93", "/upstream/café") == "/p%E2%9C%93"
    assert raw_suffix("/upstream/a", "/upstream/a") == ""


def test_raw_suffix_is_none_when_the_raw_path_does_not_decode_to_the_prefix() -> None:
    assert raw_suffix("/upstream//a/x", "/upstream/a") is None
    assert raw_suffix("/upstream/b/x", "/upstream/a") is None
    assert raw_suffix("/upstream/a", "/upstream/ab") is None
