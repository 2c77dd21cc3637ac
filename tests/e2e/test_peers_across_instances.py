"""Several llama-swap instances federated with `peers`, as on several machines.

Three real `llama-swap` processes on loopback, each compiled from YAML as a deployment would
be: two back instances serving their own models (fake upstreams), and a front one with no
models whose `peers` point at them (one of the backs requires an API key, which the front's
peer entry carries). The front must route every model to the instance that serves it,
streaming included; when one back instance dies, its models get a clear 502 while the other's
keep working; when it comes back on the same address, it is used again.
"""

from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FAKE, LLAMA_SWAP, Proxy, launch
from tests.e2e.procs import free_port

KEY_B = "peer-b-secret"


@dataclass
class Back:
    """A back instance: its config, port and the file its model servers record into."""

    name: str
    port: int
    config: Path
    record: Path
    proxy: Proxy | None = None


def back_config(path: Path, models: list[str], record: Path, api_key: str = "") -> None:
    lines = ["healthCheckTimeout: 15", "logLevel: debug"]
    if api_key:
        lines.append(f"apiKeys: [{api_key}]")
    lines.append("models:")
    for model in models:
        port = free_port()
        lines += [
            f"  {model}:",
            f"    cmd: {FAKE} --port {port} --model {model} --record {record} --tokens 8",
            f"    proxy: http://127.0.0.1:{port}",
        ]
    path.write_text("\n".join(lines) + "\n")


def front_config(path: Path, backs: dict[str, tuple[Back, list[str], str]]) -> None:
    lines = ["logLevel: debug", "peers:"]
    for name, (back, models, key) in backs.items():
        lines += [f"  {name}:", f"    proxy: http://127.0.0.1:{back.port}",
                  f"    models: [{', '.join(models)}]"]
        if key:
            lines.append(f"    apiKey: {key}")
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Cluster:
    front: Proxy
    backs: dict[str, Back]
    started: list[Proxy]

    def start_back(self, back: Back) -> None:
        argv = [LLAMA_SWAP, "--config", str(back.config), "--listen", f"127.0.0.1:{back.port}"]
        back.proxy = launch(argv, back.record, self.started)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started: list[Proxy] = []
    a = Back("box-a", free_port(), tmp_path / "a.yaml", tmp_path / "a.jsonl")
    b = Back("box-b", free_port(), tmp_path / "b.yaml", tmp_path / "b.jsonl")
    back_config(a.config, ["alpha", "alpha-2"], a.record)
    back_config(b.config, ["bravo"], b.record, api_key=KEY_B)
    front_path = tmp_path / "front.yaml"
    front_config(front_path, {"box-a": (a, ["alpha", "alpha-2"], ""),
                              "box-b": (b, ["bravo"], KEY_B)})
    try:
        front = launch([LLAMA_SWAP, "--config", str(front_path), "--listen", "127.0.0.1:0"],
                       tmp_path / "front.jsonl", started)
        result = Cluster(front, {"a": a, "b": b}, started)
        result.start_back(a)
        result.start_back(b)
        yield result
    finally:
        for proxy in started:
            proxy.stop()


def chat(url: str, model: str, *, stream: bool = False) -> tuple[int, bytes, str]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = {"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("content-type") or ""
    finally:
        conn.close()


def served(back: Back) -> list[dict[str, Any]]:
    if not back.record.exists():
        return []
    return [json.loads(line) for line in back.record.read_text().splitlines() if line]


def test_each_model_is_served_by_the_instance_that_has_it(cluster: Cluster) -> None:
    a, b = cluster.backs["a"], cluster.backs["b"]
    for model, back, other in (("alpha", a, b), ("bravo", b, a), ("alpha-2", a, b)):
        status, body, _ = chat(cluster.front.url, model)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["model"] == model
        assert [r["model"] for r in served(back)][-1] == model
        assert model not in [r["model"] for r in served(other)]
    assert cluster.front.children() == []  # the front runs no model server


def test_streaming_passes_through_the_front(cluster: Cluster) -> None:
    status, body, content_type = chat(cluster.front.url, "bravo", stream=True)
    assert status == 200 and content_type.startswith("text/event-stream"), body
    events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    tokens = [json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]]
    assert "".join(tokens).startswith("tok0 tok1")
    assert [r["model"] for r in served(cluster.backs["b"])] == ["bravo"]


def test_a_dead_instance_gives_a_clear_502_and_the_others_keep_working(cluster: Cluster) -> None:
    b = cluster.backs["b"]
    assert chat(cluster.front.url, "bravo")[0] == 200  # a pooled connection to b exists
    assert b.proxy is not None
    b.proxy.proc.send_signal(signal.SIGKILL)  # the machine is gone, no goodbye
    b.proxy.proc.wait(10)

    status, body, _ = chat(cluster.front.url, "bravo")
    assert status == 502, body
    error = json.loads(body)["error"]
    assert error["message"].startswith("peer proxy error: [box-b] "), error
    assert f"127.0.0.1:{b.port}" in error["message"], error
    assert chat(cluster.front.url, "alpha")[0] == 200

    cluster.start_back(b)  # back on the same address
    status, body, _ = chat(cluster.front.url, "bravo")
    assert status == 200, body
    assert json.loads(body)["model"] == "bravo"
    assert [r["model"] for r in served(b)] == ["bravo", "bravo"]
