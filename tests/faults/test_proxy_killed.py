"""llama-swap killed with SIGKILL: nothing of its models (nor its store writer) survives it,
and a new llama-swap on the same plan can serve at once.

A SIGKILLed process runs no cleanup.  Its model servers must die anyway (the parent-death
signal for direct children, the orphan guard for what a wrapper forked and for
descendants that left the process group -- see test_escaped_grandchild.py), and free
their ports: a restarted llama-swap on the same plan must find them free, not answered
by a stale server of the previous run.
"""

from __future__ import annotations

import dataclasses
import signal

import aiohttp

from llama_swap.compiler.plan import Group
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.procs import is_store_writer, live_descendants
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import Site, gone, until


async def test_every_model_process_dies_with_a_sigkilled_proxy_and_a_restart_serves(
    site: Site,
) -> None:
    direct = fake_model("direct", site.record)
    wrapped = fake_model("wrapped", site.record)  # forked by a shell, not exec'd
    wrapped = dataclasses.replace(wrapped, cmd=("sh", "-c", " ".join(wrapped.cmd) + "; true"))
    both = {"both": Group("both", ("direct", "wrapped"), swap=False, exclusive=False)}
    plan = make_plan([direct, wrapped], scheduler="fifo", groups=both)

    p = site.proxy(plan)
    pids: dict[str, int] = {}
    async with aiohttp.ClientSession() as s:
        for mid in ("direct", "wrapped"):
            status, body = await post_chat(s, p.url, mid)
            assert status == 200, body
            pids[mid] = body["fake"]["pid"]
    shell = [kid.pid for kid in p.children() if kid.pid not in pids.values()]
    assert len(shell) == 1  # the wrapper of "wrapped"
    (writer,) = [kid.pid for kid, cmd in live_descendants(p.proc.pid) if is_store_writer(cmd)]

    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(5)
    for pid in [*pids.values(), *shell, writer]:  # the store's writer too: its pipe closed
        await until(lambda pid=pid: gone(pid), f"pid {pid} to die with llama-swap")

    again = site.proxy(plan, name="plan-again.json")
    async with aiohttp.ClientSession() as s:
        for mid in ("direct", "wrapped"):
            status, body = await post_chat(s, again.url, mid)
            assert status == 200, body
            assert body["fake"]["pid"] != pids[mid]
