"""Websocket upgrades, models that ignore them, and the paths of audio.cpp's task API
(runtime/core: websockets, inference_routes), read as a specification."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.inference_routes import forward_path, is_model_dispatched
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.websockets import (
    ignored_websocket_refusal,
    ignores_websockets,
    is_websocket_upgrade,
)


@pytest.mark.parametrize(
    ("connection", "upgrade", "expected"),
    [
        (["Upgrade"], ["websocket"], True),
        (["keep-alive, Upgrade"], ["WebSocket"], True),
        (["keep-alive", "upgrade"], ["h2c", "websocket"], True),  # repeated headers count
        (["keep-alive"], ["websocket"], False),
        (["Upgrade"], ["h2c"], False),
        ([], [], False),
        (["upgraded"], ["websockets"], False),  # whole tokens only
    ],
)
def test_a_websocket_upgrade_needs_both_tokens(
    connection: list[str], upgrade: list[str], expected: bool
) -> None:
    assert is_websocket_upgrade(connection, upgrade) is expected


def plan() -> Plan:
    base = Model(id="m", cmd=("x",), cmdStop=None, proxy="http://127.0.0.1:1", checkEndpoint="/health", ttl=0)
    models = {"m": base, "comfy": replace(base, id="comfy", ignoreWebsockets=True)}
    return Plan(models=MappingProxyType(models))


def test_an_ignored_websocket_is_served_only_while_its_model_is_ready() -> None:
    p = plan()
    assert ignores_websockets(p, "comfy") and not ignores_websockets(p, "m")
    assert not ignores_websockets(p, "ghost")
    assert ignored_websocket_refusal(p, "comfy", ProcessState.READY) is None
    for state in (ProcessState.STOPPED, ProcessState.STARTING, ProcessState.STOPPING):
        assert ignored_websocket_refusal(p, "comfy", state) == RouteError(
            409, "model comfy is not loaded; ignored websocket requests cannot start it")
    refusal = ignored_websocket_refusal(p, "ghost", None)
    assert refusal is not None and refusal.status == 404


def test_audio_api_paths_go_upstream_without_their_prefix() -> None:
    assert forward_path("/audioapi/v1/tasks/run") == "/v1/tasks/run"
    assert forward_path("/v/chat/completions") == "/chat/completions"
    assert forward_path("/v1/chat/completions") == "/v1/chat/completions"
    assert is_model_dispatched("POST", "/audioapi/v1/tasks/run")


def test_model_dispatched_routes_by_method() -> None:
    assert is_model_dispatched("POST", "/v1/chat/completions")
    assert is_model_dispatched("POST", "/v1/audio/transcriptions")
    assert is_model_dispatched("GET", "/props") and is_model_dispatched("GET", "/v1/audio/voices")
    assert not is_model_dispatched("GET", "/v1/chat/completions")
    assert not is_model_dispatched("POST", "/props") and not is_model_dispatched("POST", "/health")
