"""Today's clients read the proxy's own errors: the official `openai` client, pointed at a
real `llama-swap`, raises its typed exception for each error the proxy makes, carrying
the proxy's message and status, on both front doors.  (The client's own message is
`Error code: <status> - <error.message>`: it found our message inside the envelope.)

- an unknown model is `NotFoundError` (404);
- a missing or wrong key is `AuthenticationError` (401);
- a request over a model's concurrency limit is `RateLimitError` (429);
- a body over `maxRequestBody` is an `APIStatusError` with status 413.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import fake_model, make_plan

KEY = "sk-errors"
LIMIT = 64 * 1024
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])
HI = [{"role": "user", "content": "hi"}]


def start(proxy: Any, record_file: Path, door: tuple[str, ...]) -> openai.AsyncOpenAI:
    """A proxy with a key, a body limit and one slow model that serves one request at a
    time, and an `openai` client for it that never retries (a retry would hide the error)."""
    model = fake_model("slow", record_file, "--response-delay", "0.8", concurrency=1)
    plan = make_plan([model], scheduler="fifo")
    plan = replace(plan, settings=replace(plan.settings, apiKeys=(KEY,), maxRequestBody=LIMIT))
    p = proxy(plan, *door)
    return openai.AsyncOpenAI(base_url=p.url + "/v1", api_key=KEY, max_retries=0)


@DOORS
async def test_an_unknown_model_is_not_found(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    client = start(proxy, record_file, door)
    async with client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="ghost", messages=HI)
    error = raised.value
    assert error.status_code == 404
    assert error.message == "Error code: 404 - no local server found for requested model: ghost"
    assert "no local server found for requested model" in str(error)
    assert error.type == "invalid_request_error" and error.code == "not_found"


@DOORS
async def test_a_wrong_key_is_an_authentication_error(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    client = start(proxy, record_file, door)
    async with client, openai.AsyncOpenAI(
        base_url=str(client.base_url), api_key="wrong", max_retries=0
    ) as stranger:
        with pytest.raises(openai.AuthenticationError) as raised:
            await stranger.chat.completions.create(model="slow", messages=HI)
    assert raised.value.status_code == 401
    assert raised.value.message == "Error code: 401 - unauthorized: invalid or missing API key"
    assert raised.value.type == "authentication_error"


@DOORS
async def test_a_request_over_the_concurrency_limit_is_rate_limited(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    client = start(proxy, record_file, door)
    async with client:
        await client.chat.completions.create(
            model="slow", messages=HI, extra_body={"fake_delay": 0})
        first = asyncio.ensure_future(
            client.chat.completions.create(model="slow", messages=HI))
        await asyncio.sleep(0.2)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="slow", messages=HI)
        assert (await first).choices[0].message.content
    error = raised.value
    assert error.status_code == 429 and error.message == "Error code: 429 - Too many requests"
    assert error.code == "concurrency_limit" and error.response.headers["Retry-After"] == "1"


@DOORS
async def test_a_body_over_the_limit_is_a_413_with_the_reason(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    client = start(proxy, record_file, door)
    big = [{"role": "user", "content": "x" * (2 * LIMIT)}]
    async with client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="slow", messages=big)
    assert raised.value.status_code == 413
    assert "maxRequestBody" in raised.value.message
    assert raised.value.code == "request_too_large"
