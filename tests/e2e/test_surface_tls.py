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
