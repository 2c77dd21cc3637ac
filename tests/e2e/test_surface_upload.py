"""A 50 MB multipart upload streams through /v1/audio/transcriptions: the proxy never
holds the file, so its memory grows by far less than the file's size."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import surface_plan, with_model

SIZE = 50 * 1024 * 1024
CHUNK = 256 * 1024
BOUNDARY = "surfaceUploadBoundary"


def pattern(i: int) -> bytes:
    return bytes([i % 251]) * CHUNK


async def body(model_first: bool) -> AsyncIterator[bytes]:
    model = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'.encode()
    if model_first:
        yield model
    yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
           "Content-Type: audio/wav\r\n\r\n").encode()
    for i in range(SIZE // CHUNK):
        yield pattern(i)
    yield b"\r\n"
    if not model_first:
        yield model
    yield f"--{BOUNDARY}--\r\n".encode()


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM) in bytes; current RSS where /proc has no peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss


def expected_sha() -> str:
    h = hashlib.sha256()
    for i in range(SIZE // CHUNK):
        h.update(pattern(i))
    return h.hexdigest()


async def upload(url: str, model_first: bool) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(
        url + "/v1/audio/transcriptions",
        data=body(model_first),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.read())


async def test_50mb_upload_streams_through_with_bounded_memory(proxy: Any, record_file: Path) -> None:
    m = with_model(fake_model("whisper", record_file), useModelName="whisper-1")
    p = proxy(surface_plan([m]))
    async with aiohttp.ClientSession() as s:  # load the model first: measure only the upload
        async with s.get(p.url + "/upstream/whisper/health") as r:
            assert r.status == 200
    before = peak_rss(p.proc.pid)
    sha = expected_sha()
    for model_first in (True, False):
        got = await upload(p.url, model_first)
        parts = {part["name"]: part for part in got["fake"]["parts"]}
        assert parts["file"]["bytes"] == SIZE and parts["file"]["sha256"] == sha
        assert parts["model"]["value"] == "whisper-1"
    grown = peak_rss(p.proc.pid) - before
    assert grown < 20 * 1024 * 1024, f"proxy peak RSS grew by {grown / 2**20:.1f} MiB"
