"""Another program on a model's port must not get that model's traffic.

A second llama-swap on the same box (same `startPort`), or any other server, may already
listen on the port a model is configured to use.  The model's own server then fails to
bind, but a health check aimed at the port succeeds against the foreign server, and
requests would be relayed to it without anyone noticing.

Required: the request fails with a 502 that names the port and says how to move it
(`startPort`); the foreign server is not sent a single request; nothing of the model is
left running; and once the port is free again the model starts and serves normally.
"""

from __future__ import annotations

import dataclasses

import aiohttp

from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.procs import free_port
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import Site, until, until_async


async def answers_health(s: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with s.get(f"{url}/health") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def foreign_requests(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(f"{url}/fake/stats") as resp:
        return int((await resp.json())["requests"])


async def test_a_port_taken_by_another_program_fails_with_502_naming_the_port(site: Site) -> None:
    port = free_port()
    foreign_url = f"http://127.0.0.1:{port}"
    foreign = site.spawn(*site.fake("foreign", port))
    model = dataclasses.replace(
        fake_model("a", site.record), cmd=site.fake("a", port), proxy=foreign_url
    )
    p = site.proxy(make_plan([model]))
    async with aiohttp.ClientSession() as s:
        await until_async(lambda: answers_health(s, foreign_url), "the foreign server")

        status, body = await post_chat(s, p.url, "a")
        assert status == 502, body
        assert f"127.0.0.1:{port}" in body["error"]["message"] and "startPort" in body["error"]["message"], body
        assert await foreign_requests(s, foreign_url) == 0
        await until(lambda: not p.children(), "no model process left")

        foreign.kill()
        foreign.wait(5)
        status, body = await post_chat(s, p.url, "a")
        assert status == 200, body
        assert body["fake"]["model"] == "a"
