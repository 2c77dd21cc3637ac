"""The runtime's life around requests: /health and /running, unload that waits for the
exit, TTL unloading, SIGTERM shutdown that leaves no child behind, and the CLI's
refusals (bad plan, redacted secrets, usage)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest

from llama_swap.compiler.plan import REDACTED, plan_to_json
from tests.e2e.conftest import LLAMA_SWAP, Proxy, fake_model, launch, make_plan
from tests.e2e.test_serial import post_chat


async def get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_health_and_running_report_the_loaded_model(proxy: Any, record_file: Path) -> None:
    model = fake_model("a", record_file, ttl=300)
    p = proxy(make_plan([model, fake_model("b", record_file)]))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{p.url}/health") as resp:
            assert resp.status == 200 and await resp.text() == "OK"
        assert await get_json(s, f"{p.url}/running") == {"running": [], "profile": None}
        assert (await post_chat(s, p.url, "a"))[0] == 200
        running = (await get_json(s, f"{p.url}/running"))["running"]
    assert running == [
        {
            "model": "a",
            "state": "ready",
            "cmd": " ".join(model.cmd),
            "proxy": model.proxy,
            "ttl": 300,
            "name": "",
            "description": "",
        }
    ]


async def test_long_and_numerous_request_headers_are_accepted(
    proxy: Any, record_file: Path
) -> None:
    """Long cookies and JWTs must pass (the Go original accepts 1 MiB of headers)."""
    p = proxy(make_plan([fake_model("a", record_file)]))
    headers = {"X-Big": "a" * 100_000, **{f"X-H{i}": "v" for i in range(300)}}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{p.url}/health", headers=headers) as resp:
            assert resp.status == 200


async def test_unload_returns_only_after_the_process_exited(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([fake_model("a", record_file, aliases=("alpha",))]))
    async with aiohttp.ClientSession() as s:
        status, body = await post_chat(s, p.url, "a")
        assert status == 200
        child = psutil.Process(body["fake"]["pid"])
        async with s.post(f"{p.url}/api/models/unload/alpha") as resp:
            assert resp.status == 200 and await resp.text() == "OK"
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert await get_json(s, f"{p.url}/running") == {"running": [], "profile": None}

        status, body = await post_chat(s, p.url, "a")
        child = psutil.Process(body["fake"]["pid"])
        async with s.post(f"{p.url}/api/models/unload") as resp:
            assert resp.status == 200 and await resp.json() == {"msg": "ok"}
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE

        async with s.post(f"{p.url}/api/models/unload/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "model not found"


async def test_unload_fails_requests_waiting_for_that_model(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([fake_model("slow", record_file, "--start-delay", "3")]))
    async with aiohttp.ClientSession() as s:
        waiting = asyncio.ensure_future(post_chat(s, p.url, "slow"))
        await asyncio.sleep(0.5)
        async with s.post(f"{p.url}/api/models/unload") as resp:
            assert resp.status == 200
        status, body = await waiting
    assert status == 503
    assert "unloaded" in body["error"]["message"]
    assert p.children() == []


async def test_an_idle_model_is_unloaded_after_its_ttl(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([fake_model("a", record_file, ttl=1)]))
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "a"))[0] == 200
        assert [r["model"] for r in (await get_json(s, f"{p.url}/running"))["running"]] == ["a"]
        for _ in range(100):  # ttl 1 s, checked about every second
            if (await get_json(s, f"{p.url}/running"))["running"] == []:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the model was not unloaded after its ttl")
    assert "TTL" in p.log_text()
    assert p.children() == []


async def test_sigterm_fails_queued_requests_stops_every_child_and_exits_0(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("a", record_file, "--response-delay", "3"),
            fake_model("b", record_file),
        ]
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        serving = asyncio.ensure_future(post_chat(s, p.url, "a"))
        for _ in range(100):
            if p.children():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        queued = asyncio.ensure_future(post_chat(s, p.url, "b"))
        await asyncio.sleep(0.2)
        children = p.children()
        assert children, "model a should be running"
        code = await asyncio.to_thread(p.terminate)
        status, body = await queued
        assert status == 503 and body["error"]["message"] == "llama-swap is shutting down"
        try:
            await serving
        except aiohttp.ClientError:
            pass  # the in-flight request was cut when its model was stopped
    assert code == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert "shutdown complete" in p.log_text()


async def test_a_stop_cut_off_at_the_shutdown_timeout_is_finished_with_sigkill(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    # The model ignores SIGTERM and its cmdStop hangs, through a grandchild that also
    # ignores SIGTERM (so neither the parent-death signal nor the orphan guard's SIGTERM
    # would end it): at the 1 s shutdown timeout llama-swap SIGKILLs the process groups
    # still alive and reaps them before it exits.
    pid_file = tmp_path / "stopper.pid"
    hang = f'trap "" TERM; sleep 60 & echo $! > {pid_file}; wait'
    model = dataclasses.replace(
        fake_model("a", record_file, "--ignore-sigterm"), cmdStop=("sh", "-c", hang)
    )
    p = proxy(make_plan([model]), "--shutdown-timeout", "1")
    leftovers: list[psutil.Process] = []
    try:
        async with aiohttp.ClientSession() as s:
            status, body = await post_chat(s, p.url, "a")
        assert status == 200
        leftovers.append(psutil.Process(body["fake"]["pid"]))
        p.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(p.proc.wait, 15)  # 1 s timeout + SIGKILL + reaping
        assert code == 0
        assert pid_file.exists(), "cmdStop never ran"
        leftovers.append(psutil.Process(int(pid_file.read_text())))
        for proc in leftovers:
            assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc
        assert "did not stop within 1.0s: SIGKILL" in p.log_text()
    finally:
        for proc in leftovers:
            if proc.is_running():
                proc.kill()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("listen", [":0", "0.0.0.0:0"])
async def test_listen_on_port_0_binds_one_port_for_every_address(
    listen: str, record_file: Path, tmp_path: Path
) -> None:
    # `:0` means every interface, IPv4 and IPv6: both sockets get the same random port,
    # so the announced URLs all name one port a client can predict from any of them.
    plan = tmp_path / "plan.json"
    plan.write_text(plan_to_json(make_plan([fake_model("a", record_file)])))
    started: list[Proxy] = []
    try:
        p = launch([LLAMA_SWAP, "--plan", str(plan), "--listen", listen], record_file, started)
        line = next(x for x in p.output if x.startswith("llama-swap: listening on"))
        urls = line.split("listening on", 1)[1].split()
        ports = {urlsplit(url).port for url in urls}
        assert len(ports) == 1, line
        port = ports.pop()
        hosts = ["127.0.0.1"]
        if listen == ":0" and ipv6_loopback():
            hosts.append("[::1]")
            assert len(urls) == 2, line
        async with aiohttp.ClientSession() as s:
            for host in hosts:
                async with s.get(f"http://{host}:{port}/health") as resp:
                    assert resp.status == 200, host
    finally:
        for proxy in started:
            proxy.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLAMA_SWAP, *args], capture_output=True, text=True, timeout=30)


def test_the_cli_refuses_bad_plans_with_a_clear_message(tmp_path: Path, record_file: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_cli("--plan", str(bad))
    assert result.returncode == 1 and "not valid JSON" in result.stderr

    plan = make_plan([fake_model("a", record_file)])
    secret = dataclasses.replace(
        plan, settings=dataclasses.replace(plan.settings, apiKeys=(REDACTED,))
    )
    redacted = tmp_path / "redacted.json"
    redacted.write_text(plan_to_json(secret))
    result = run_cli("-plan", str(redacted))  # Go's single-dash spelling
    assert result.returncode == 1
    assert "redacted" in result.stderr and "--show-secrets" in result.stderr

    invalid = json.loads(plan_to_json(plan))
    invalid["models"]["a"]["cmd"] = "not a list"
    wrong = tmp_path / "invalid.json"
    wrong.write_text(json.dumps(invalid))
    result = run_cli("--plan", str(wrong))
    assert result.returncode == 1 and "models.a.cmd" in result.stderr


def test_the_cli_reports_config_errors_and_usage(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models:\n  llama:\n    proxy: http://127.0.0.1:9999\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 1
    assert f"{config}:2:3: models.llama.cmd" in result.stderr
    assert run_cli().returncode == 2
    assert run_cli("--tls-cert-file", "x.pem", "--plan", "p.json").returncode == 2
    version = run_cli("-version")
    assert version.returncode == 0 and version.stdout.startswith("version: ")
