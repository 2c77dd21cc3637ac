"""/v1/models (and /models) records from the plan and the processes' states."""

from __future__ import annotations

import pytest

from llama_swap.compiler.plan import Capabilities, Peer, freeze
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.render.models_list import models_list

from .conftest import make_plan, model

STOPPED: dict[str, ProcessState] = {}


def test_record_shape_and_order() -> None:
    plan = make_plan(
        model("b-vision", name="  Vision  ", description=" sees ",
              capabilities=Capabilities(in_=("text", "image"), out=("text",), tools=True, context=8192),
              metadata=freeze({"family": "x", "context_length": 1})),
        model("a-plain", metadata=freeze({"k": [1, 2]})),
        model("hidden", unlisted=True, aliases=("hid",)),
        peers=(Peer(id="cloud", proxy="http://x", models=("a-plain", "z-remote")),),
    )
    doc = models_list(plan, 1700000000, states=STOPPED)
    assert doc["object"] == "list"
    ids = [r["id"] for r in doc["data"]]
    # peer models under their full names: a local model and a peer's may share a bare id
    assert ids == ["a-plain", "b-vision", "cloud/a-plain", "cloud/z-remote"]
    local, vision, peer_dup, remote = doc["data"]
    assert local == {"id": "a-plain", "object": "model", "created": 1700000000, "owned_by": "llama-swap",
                     "meta": {"llamaswap": {"k": [1, 2], "type": "model"}},
                     "status": {"value": "unloaded"}}
    assert peer_dup["meta"] == {"llamaswap": {"type": "peer", "peerID": "cloud"}}
    assert peer_dup["name"] == "cloud: a-plain"
    assert peer_dup["status"] == {"value": "unloaded"}
    assert vision["name"] == "Vision" and vision["description"] == "sees"
    assert vision["architecture"] == {"input_modalities": ["text", "image"], "output_modalities": ["text"],
                                      "modality": "text+image->text"}
    assert vision["capabilities"] == {"vision": True, "function_calling": True}
    assert vision["supported_parameters"] == ["tools", "tool_choice"]
    assert vision["context_length"] == 8192
    assert vision["meta"] == {"llamaswap": {"family": "x", "type": "model"}, "n_ctx": 8192}
    assert remote["name"] == "cloud: z-remote"
    assert list(vision) == ["id", "object", "created", "owned_by", "name", "description", "architecture",
                            "capabilities", "supported_parameters", "context_length", "meta", "status"]


def test_n_ctx_only_where_a_context_length_is_configured() -> None:
    plan = make_plan(model("none"), model("zero", capabilities=Capabilities(context=0, tools=True)),
                     model("some", capabilities=Capabilities(context=4096)))
    meta = {r["id"]: r["meta"] for r in models_list(plan, 0, states=STOPPED)["data"]}
    assert "n_ctx" not in meta["none"] and "n_ctx" not in meta["zero"]
    assert meta["some"]["n_ctx"] == 4096


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (None, "unloaded"),
        (ProcessState.STOPPED, "unloaded"),
        (ProcessState.SHUTDOWN, "unloaded"),
        (ProcessState.STARTING, "loaded"),
        (ProcessState.READY, "loaded"),
        (ProcessState.STOPPING, "loaded"),
    ],
)
def test_status_is_loaded_from_start_until_stopped(state: ProcessState | None, value: str) -> None:
    plan = make_plan(model("m", aliases=("m-alias",)), includeAliasesInList=True,
                     peers=(Peer(id="far", proxy="http://x", models=("r",)),))
    states = {} if state is None else {"m": state}
    records = {r["id"]: r for r in models_list(plan, 0, states=states)["data"]}
    assert records["m"]["status"] == {"value": value}
    assert records["m-alias"]["status"] == {"value": value}  # an alias shares its model's state
    assert records["far/r"]["status"] == {"value": "unloaded"}  # a peer's state is not ours to know


def test_internal_keys_say_what_a_record_is_and_win_over_user_metadata() -> None:
    plan = make_plan(model("m", aliases=("a1", " "), metadata=freeze({"type": "mine", "team": "x"})),
                     includeAliasesInList=True)
    records = {r["id"]: r for r in models_list(plan, 0, states=STOPPED)["data"]}
    assert records["m"]["meta"]["llamaswap"] == {"type": "model", "team": "x", "aliases": ["a1", " "]}
    assert records["a1"]["meta"]["llamaswap"] == {"type": "alias", "team": "x", "modelID": "m"}


def test_aliases_listed_on_request_but_not_for_unlisted() -> None:
    plan = make_plan(model("m", aliases=("m-alias", " ")), model("h", unlisted=True, aliases=("h2",)),
                     includeAliasesInList=True)
    assert [r["id"] for r in models_list(plan, 0, states=STOPPED)["data"]] == ["m", "m-alias"]
    plan = make_plan(model("m", aliases=("m-alias",)))
    assert [r["id"] for r in models_list(plan, 0, states=STOPPED)["data"]] == ["m"]


def test_capability_flags() -> None:
    caps = Capabilities(in_=("audio", "text", "image"), out=("text", "audio", "image"), reranker=True)
    rec = models_list(make_plan(model("x", capabilities=caps)), 0, states=STOPPED)["data"][0]
    assert set(rec["capabilities"]) == {
        "vision", "audio_transcriptions", "audio_speech", "image_generation", "image_to_image", "reranker"
    }
