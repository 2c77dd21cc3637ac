"""/v1/models records from the plan."""

from __future__ import annotations

from llama_swap.compiler.plan import Capabilities, Peer, freeze
from llama_swap.runtime.http.render.models_list import models_list

from .conftest import make_plan, model


def test_record_shape_and_order() -> None:
    plan = make_plan(
        model("b-vision", name="  Vision  ", description=" sees ",
              capabilities=Capabilities(in_=("text", "image"), out=("text",), tools=True, context=8192),
              metadata=freeze({"family": "x", "context_length": 1})),
        model("a-plain", metadata=freeze({"k": [1, 2]})),
        model("hidden", unlisted=True, aliases=("hid",)),
        peers=(Peer(id="cloud", proxy="http://x", models=("a-plain", "z-remote")),),
    )
    doc = models_list(plan, 1700000000)
    assert doc["object"] == "list"
    ids = [r["id"] for r in doc["data"]]
    # peer models under their full names: a local model and a peer's may share a bare id
    assert ids == ["a-plain", "b-vision", "cloud/a-plain", "cloud/z-remote"]
    local, vision, peer_dup, remote = doc["data"]
    assert local == {"id": "a-plain", "object": "model", "created": 1700000000, "owned_by": "llama-swap",
                     "meta": {"llamaswap": {"k": [1, 2]}}}
    assert peer_dup["meta"] == {"llamaswap": {"type": "peer", "peerID": "cloud"}}
    assert peer_dup["name"] == "cloud: a-plain" and peer_dup["status"] == {"value": "unloaded"}
    assert vision["name"] == "Vision" and vision["description"] == "sees"
    assert vision["architecture"] == {"input_modalities": ["text", "image"], "output_modalities": ["text"],
                                      "modality": "text+image->text"}
    assert vision["capabilities"] == {"vision": True, "function_calling": True}
    assert vision["supported_parameters"] == ["tools", "tool_choice"]
    assert vision["context_length"] == 8192
    assert vision["meta"] == {"llamaswap": {"family": "x"}}
    assert remote["name"] == "cloud: z-remote"


def test_aliases_listed_on_request_but_not_for_unlisted() -> None:
    plan = make_plan(model("m", aliases=("m-alias", " ")), model("h", unlisted=True, aliases=("h2",)),
                     includeAliasesInList=True)
    assert [r["id"] for r in models_list(plan, 0)["data"]] == ["m", "m-alias"]
    plan = make_plan(model("m", aliases=("m-alias",)))
    assert [r["id"] for r in models_list(plan, 0)["data"]] == ["m"]


def test_capability_flags() -> None:
    caps = Capabilities(in_=("audio", "text", "image"), out=("text", "audio", "image"), reranker=True)
    rec = models_list(make_plan(model("x", capabilities=caps)), 0)["data"][0]
    assert set(rec["capabilities"]) == {
        "vision", "audio_transcriptions", "audio_speech", "image_generation", "image_to_image", "reranker"
    }
