"""Compatibility: the official `openai` client and an Anthropic-style /v1/messages request
through the real proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import surface_plan

KEY = "sk-client-test"


async def test_openai_client(proxy: Any, record_file: Path, tmp_path: Path) -> None:
    p = proxy(surface_plan([fake_model("chat", record_file), fake_model("whisper", record_file)],
                           apiKeys=(KEY,)))
    client = openai.AsyncOpenAI(base_url=p.url + "/v1", api_key=KEY, max_retries=0)
    try:
        chat = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content
        text = ""
        stream = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        assert text.startswith("tok0")
        done = await client.completions.create(model="chat", prompt="once upon")
        assert done.choices[0].text
        emb = await client.embeddings.create(model="chat", input=["a", "b"])
        assert len(emb.data) == 2 and emb.data[0].embedding
        audio = tmp_path / "clip.wav"
        audio.write_bytes(b"RIFF" + bytes(20000))
        with audio.open("rb") as fh:
            tr = await client.audio.transcriptions.create(model="whisper", file=fh)
        parts = {part["name"]: part for part in tr.fake["parts"]}  # type: ignore[attr-defined]
        assert tr.text.startswith("fake transcription") and parts["file"]["bytes"] == 20004
        models = await client.models.list()
        assert {m.id for m in models.data} == {"chat", "whisper"}
        bad = openai.AsyncOpenAI(base_url=p.url + "/v1", api_key="wrong", max_retries=0)
        try:
            await bad.models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass
        finally:
            await bad.close()
    finally:
        await client.close()


async def test_anthropic_style_messages(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("claude-like", record_file)], apiKeys=(KEY,)))
    request = {"model": "claude-like", "max_tokens": 16,
               "messages": [{"role": "user", "content": "hello"}]}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/messages", json=request, headers=headers) as r:
            assert r.status == 200
            fake = json.loads(await r.read())["fake"]
        assert fake["path"] == "/v1/messages" and fake["body"] == request
        assert fake["headers"]["anthropic-version"] == "2023-06-01"
        async with s.post(p.url + "/v1/messages/count_tokens", json=request, headers=headers) as r:
            assert r.status == 200 and json.loads(await r.read())["fake"]["path"] == "/v1/messages/count_tokens"
