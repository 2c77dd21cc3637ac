"""TLS: `--tls-cert-file/--tls-key-file` serve the same surface over https."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_https(proxy: Any, record_file: Path, self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    p = proxy(surface_plan([fake_model("m", record_file)]),
              "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    assert p.url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "m"})
        assert status == 200 and json.loads(raw)["fake"]["model"] == "m"
        status, _, raw = await fetch(s, "GET", p.url + "/v1/models")
        assert [r["id"] for r in json.loads(raw)["data"]] == ["m"]


async def test_https_keeps_one_connection_across_the_fast_path_and_aiohttp(
    proxy: Any, record_file: Path, self_signed: tuple[Path, Path]
) -> None:
    """Over TLS too, inference requests take the fast path and the rest are handed to
    aiohttp on the same connection (one pooled connection: every request reuses it)."""
    cert, key = self_signed
    p = proxy(surface_plan([fake_model("m", record_file, "--tokens", "4")]),
              "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    connector = aiohttp.TCPConnector(ssl=ctx, limit=1)
    async with aiohttp.ClientSession(connector=connector) as s:
        for _ in range(2):
            status, _, raw = await fetch(
                s, "POST", p.url + "/v1/chat/completions", json={"model": "m"}
            )
            assert status == 200 and json.loads(raw)["object"] == "chat.completion"
            status, headers, raw = await fetch(
                s, "POST", p.url + "/v1/chat/completions", json={"model": "m", "stream": True}
            )
            assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
            assert raw.rstrip().endswith(b"data: [DONE]")
        status, _, raw = await fetch(s, "GET", p.url + "/metrics")
        assert status == 200
    counters = {
        line.split()[0]: int(float(line.split()[1]))
        for line in raw.decode().splitlines() if line.startswith("llamaswap_fast_path_")
    }
    # the one connection served four requests on the fast path, then /metrics moved it
    assert counters["llamaswap_fast_path_requests_total"] == 4
    assert counters["llamaswap_fast_path_handoffs_total"] == 1
