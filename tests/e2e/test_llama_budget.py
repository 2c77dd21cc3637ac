"""The budget router against real llama.cpp `llama-server` processes (tiny models with
declared sizes), compiled from YAML by `llama-swap --config`: two fit side by side, a
third makes the least recently used idle one go, and a streaming one is never evicted.

Needs the binary from `scripts/build_llama_server.py` (see `tests/e2e/llama_fixtures.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.e2e.test_llama_server import assert_ok, chat, chat_body, running

if TYPE_CHECKING:
    from tests.e2e.llama_fixtures import SwapProxy, TinyModels

pytest_plugins = ["tests.e2e.llama_fixtures"]

pytestmark = [pytest.mark.llama_server, pytest.mark.timeout(300)]


def budget_config(binary: Path, tmp_path: Path, models: dict[str, Path], vram: int) -> Path:
    # imported here: the fixtures module is loaded as a pytest plugin first (assert rewriting)
    from tests.e2e.llama_fixtures import model_yaml

    entries = "".join(
        model_yaml(binary, mid, gguf) + "    resources: {vram: 10}\n" for mid, gguf in models.items()
    )
    path = tmp_path / "budget.yaml"
    path.write_text(
        "healthCheckTimeout: 60\nlogLevel: debug\n"
        "routing:\n  scheduler: {use: fifo}\n"
        f"  router:\n    use: budget\n    settings:\n      budget:\n        resources: {{vram: {vram}}}\n"
        "models:\n" + entries
    )
    return path


def aliases_alive(proxy: SwapProxy) -> list[str]:
    out = []
    for p in proxy.llama_children():
        cmd = p.cmdline()
        out.append(cmd[cmd.index("--alias") + 1])
    return sorted(out)


async def test_two_real_models_share_the_budget_and_the_lru_one_makes_room(
    tiny_models: TinyModels,
    llama_server_bin: Path,
    tmp_path: Path,
    swap_proxy: Callable[[Path], SwapProxy],
) -> None:
    three = {"tiny-a": tiny_models.a, "tiny-b": tiny_models.b, "tiny-c": tiny_models.a}
    proxy = swap_proxy(budget_config(llama_server_bin, tmp_path, three, vram=20))
    async with aiohttp.ClientSession() as s:
        for model in ("tiny-a", "tiny-b", "tiny-a"):  # b is now the least recently used
            assert_ok(await chat(s, proxy.url, model, stream=False), model, stream=False)
        assert aliases_alive(proxy) == ["tiny-a", "tiny-b"]  # side by side
        assert [r["resources"] for r in await running(s, proxy)] == [{"vram": 10}] * 2

        # c must evict one; a streams meanwhile, so b goes even if a were older
        async with s.post(
            f"{proxy.url}/v1/chat/completions", json=chat_body("tiny-a", stream=True)
        ) as stream:
            assert (await stream.content.readline()).startswith(b"data:")
            result = await chat(s, proxy.url, "tiny-c", stream=False)
            body = await stream.read()
        assert_ok(result, "tiny-c", stream=False)
        assert body.rstrip().endswith(b"data: [DONE]")
        assert aliases_alive(proxy) == ["tiny-a", "tiny-c"]

        burst = ["tiny-a", "tiny-b", "tiny-c"] * 4
        results = await asyncio.gather(*(chat(s, proxy.url, m, stream=False) for m in burst))
        for model, r in zip(burst, results, strict=True):
            assert_ok(r, model, stream=False)
        assert len(aliases_alive(proxy)) <= 2
        async with s.get(f"{proxy.url}/running") as resp:
            usage: dict[str, Any] = (await resp.json())["budget"]
    assert usage["resources"]["vram"]["used"] <= 20
    assert "evicting tiny-b, idle" in proxy.log.read_text()
