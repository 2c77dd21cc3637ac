"""llama-server's own clients' routes and the error bodies, through the proxy to a real
llama-server, on both front doors:

- `GET /models` before anything is loaded: the model `unloaded`, `meta.n_ctx` the
  configured context; `GET /props?model=<alias>` loads it and returns the real server's
  properties (its context, its alias); the list then says `loaded`;
- the official `openai` client gets the proxy's own errors (unknown model) as
  `NotFoundError`, and the real server's errors (a malformed request) as the server wrote
  them: passed through untouched, with the server's status and message.

Needs the binary from `scripts/build_llama_server.py` (see `tests/e2e/llama_fixtures.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import openai
import pytest

if TYPE_CHECKING:
    from tests.e2e.llama_fixtures import TinyModels

pytest_plugins = ["tests.e2e.llama_fixtures"]
pytestmark = [pytest.mark.llama_server, pytest.mark.timeout(300)]
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def config(binary: Path, models: TinyModels, tmp_path: Path) -> Path:
    """One real model `tiny` (context 512, as its command line says) with alias `tiny-alias`."""
    # imported here: the module is a pytest plugin, loaded (and assert-rewritten) by pytest
    from tests.e2e.llama_fixtures import config_yaml, model_yaml

    entry = model_yaml(binary, "tiny", models.a)
    entry += "    aliases: [tiny-alias]\n    capabilities:\n      context: 512\n"
    path = tmp_path / "clients.yaml"
    path.write_text(config_yaml("serial", [entry]))
    return path


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


@DOORS
async def test_models_and_props_through_the_proxy(
    swap_proxy: Any, llama_server_bin: Path, tiny_models: TinyModels, tmp_path: Path,
    door: tuple[str, ...],
) -> None:
    proxy = swap_proxy(config(llama_server_bin, tiny_models, tmp_path), *door)
    async with aiohttp.ClientSession() as s:
        status, listing = await get_json(s, proxy.url + "/models")
        assert status == 200
        (record,) = listing["data"]
        assert record["id"] == "tiny" and record["status"] == {"value": "unloaded"}
        assert record["meta"] == {"llamaswap": {"type": "model", "aliases": ["tiny-alias"]}, "n_ctx": 512}
        assert proxy.llama_children() == []

        status, props = await get_json(s, proxy.url + "/props?model=tiny-alias")
        assert status == 200, props
        assert props["default_generation_settings"]["n_ctx"] == 512
        assert props["model_alias"] == "tiny"  # the real server's --alias

        status, listing = await get_json(s, proxy.url + "/v1/models")
        assert [r["status"] for r in listing["data"]] == [{"value": "loaded"}]
        assert len(proxy.llama_children()) == 1


@DOORS
async def test_errors_reach_the_openai_client_from_the_proxy_and_from_the_server(
    swap_proxy: Any, llama_server_bin: Path, tiny_models: TinyModels, tmp_path: Path,
    door: tuple[str, ...],
) -> None:
    proxy = swap_proxy(config(llama_server_bin, tiny_models, tmp_path), *door)
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(
                model="ghost", messages=[{"role": "user", "content": "hi"}])
        assert unknown.value.message == (
            "Error code: 404 - no local server found for requested model: ghost")
        with pytest.raises(openai.BadRequestError) as bad:  # the real server's own 400
            await client.chat.completions.create(
                model="tiny", messages=[{"role": "nobody", "content": 1}])  # type: ignore[list-item]
    assert bad.value.status_code == 400
    body = bad.value.body
    assert isinstance(body, dict) and "src" not in body  # not one of the proxy's own errors
    assert bad.value.message.startswith("Error code: 400 - ") and len(bad.value.message) > 20
