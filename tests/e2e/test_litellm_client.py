"""LiteLLM as a client of the proxy (its `openai/` provider pointed at llama-swap), on both
front doors: a completion works, and the proxy's own errors become LiteLLM's typed
exceptions carrying the proxy's status and message.

- an unknown model is `litellm.NotFoundError` (404);
- a wrong key is `litellm.AuthenticationError` (401);
- a request over the model's concurrency limit is `litellm.RateLimitError` (429).

LiteLLM is a large package, kept out of the `test` extra: `pip install -e '.[clients]'`
installs it.  scripts/test.sh installs it and sets LLAMA_SWAP_REQUIRE_LITELLM=1, which makes
these tests fail when it is missing; elsewhere they are skipped without it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import fake_model, make_plan

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
try:
    import litellm
except ImportError:
    litellm = None

KEY = "sk-litellm"
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])
HI = [{"role": "user", "content": "hi"}]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def litellm_installed() -> None:
    """Skip without LiteLLM, or fail where the run requires it (scripts/test.sh)."""
    if litellm is None:
        missing = "litellm is not installed (pip install -e '.[clients]')"
        if os.environ.get("LLAMA_SWAP_REQUIRE_LITELLM") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


def start(proxy: Any, record_file: Path, door: tuple[str, ...]) -> str:
    """A proxy with a key and one slow model serving one request at a time; its /v1 URL."""
    model = fake_model("slow", record_file, "--response-delay", "0.8", concurrency=1)
    plan = make_plan([model], scheduler="fifo")
    plan = replace(plan, settings=replace(plan.settings, apiKeys=(KEY,)))
    return str(proxy(plan, *door).url) + "/v1"


async def complete(base: str, model: str, key: str = KEY, **extra: Any) -> Any:
    return await litellm.acompletion(
        model=f"openai/{model}", api_base=base, api_key=key, messages=HI,
        num_retries=0, max_retries=0, **extra,
    )


@DOORS
async def test_litellm_gets_completions_and_typed_errors(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    base = start(proxy, record_file, door)
    answer = await complete(base, "slow", extra_body={"fake_delay": 0})
    assert answer.choices[0].message.content

    with pytest.raises(litellm.NotFoundError) as unknown:
        await complete(base, "ghost")
    assert unknown.value.status_code == 404
    assert "no local server found for requested model: ghost" in str(unknown.value)

    with pytest.raises(litellm.AuthenticationError) as stranger:
        await complete(base, "slow", key="wrong")
    assert stranger.value.status_code == 401
    assert "unauthorized: invalid or missing API key" in str(stranger.value)

    first = asyncio.ensure_future(complete(base, "slow"))
    await asyncio.sleep(0.2)
    with pytest.raises(litellm.RateLimitError) as limited:
        await complete(base, "slow")
    assert limited.value.status_code == 429 and "Too many requests" in str(limited.value)
    assert (await first).choices[0].message.content
