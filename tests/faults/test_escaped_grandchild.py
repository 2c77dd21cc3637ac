"""A model server's whole process tree dies with it, even a descendant that left its group.

Every model runs in its own process group, and stopping a model signals that group.  A
server that forks a helper which calls `setsid` moves the helper into a new session and
group: the group signal misses it, and once the server exits the helper is reparented to
init, out of reach of any walk down from llama-swap.  Such a helper may hold the port,
GPU memory, or the output pipes.

Required: after an unload, after llama-swap is stopped with SIGTERM, and after llama-swap
is killed with SIGKILL (when only the orphan guard is left to clean up), no process of the
model's tree is alive; and a llama-swap restarted on the same plan finds the model's port
free and serves.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import aiohttp
import psutil

from llama_swap.compiler.plan import Model
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.procs import free_port
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import PY, Site, gone, until

# argv: PIDFILE SERVER-ARGV...  Forks a helper that calls setsid and publishes its pid,
# then becomes the model server itself.
ESCAPE = """\
import os, sys, time
pidfile, server = sys.argv[1], sys.argv[2:]
if os.fork() == 0:
    os.setsid()
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
    while True:
        time.sleep(1)
os.execv(server[0], server)
"""


def escaping_model(site: Site, mid: str = "a") -> tuple[Model, Path]:
    """A fake upstream started through ESCAPE; and the file its helper's pid appears in."""
    port = free_port()
    script = site.script("escape.py", ESCAPE)
    pidfile = site.root / f"{mid}.helper.pid"
    cmd = (PY, str(script), str(pidfile), *site.fake(mid, port))
    model = dataclasses.replace(
        fake_model(mid, site.record), cmd=cmd, proxy=f"http://127.0.0.1:{port}"
    )
    return model, pidfile


async def serve_once(url: str, mid: str = "a") -> int:
    """One request answered by the model; returns the server's pid."""
    async with aiohttp.ClientSession() as s:
        status, body = await post_chat(s, url, mid)
    assert status == 200, body
    return int(body["fake"]["pid"])


async def the_helper(pidfile: Path, server: int) -> int:
    """The helper's pid, once published; it runs in a session of its own."""
    await until(lambda: pidfile.exists(), "the setsid helper")
    helper = int(pidfile.read_text())
    assert not gone(helper)
    assert psutil.Process(helper).ppid() == server
    assert os.getsid(helper) != os.getsid(server)
    return helper


async def test_an_unload_kills_a_descendant_that_left_the_process_group(site: Site) -> None:
    model, pidfile = escaping_model(site)
    p = site.proxy(make_plan([model]))
    server = await serve_once(p.url)
    helper = await the_helper(pidfile, server)

    async with aiohttp.ClientSession() as s, s.post(f"{p.url}/api/models/unload") as resp:
        assert resp.status == 200
    assert gone(server)
    await until(lambda: gone(helper), "the helper to die with its server", timeout=5)


async def test_a_sigterm_shutdown_kills_a_descendant_that_left_the_process_group(
    site: Site,
) -> None:
    model, pidfile = escaping_model(site)
    p = site.proxy(make_plan([model]))
    server = await serve_once(p.url)
    helper = await the_helper(pidfile, server)

    assert p.terminate() == 0
    assert gone(server)
    await until(lambda: gone(helper), "the helper to die with llama-swap", timeout=5)


async def test_after_a_sigkill_every_process_of_the_tree_dies_and_a_restart_serves(
    site: Site,
) -> None:
    model, pidfile = escaping_model(site)
    plan = make_plan([model])
    p = site.proxy(plan)
    server = await serve_once(p.url)
    helper = await the_helper(pidfile, server)

    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(5)
    await until(lambda: gone(server), "the server to die with llama-swap")
    await until(lambda: gone(helper), "the orphan guard to kill the helper")

    pidfile.unlink()
    again = site.proxy(plan, name="plan-again.json")
    server = await serve_once(again.url)
    await the_helper(pidfile, server)
