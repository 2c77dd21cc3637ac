"""Peers."""

from __future__ import annotations

from llama_swap.compiler.plan import Timeouts

from .resolve_util import errors_of, json_of, plan_of


def test_peer_gets_global_macros_in_api_key_and_filters() -> None:
    d = json_of(
        """
        macros: {key: secret-123, temp: 0.3, drop: "top_k"}
        peers:
          zed: {proxy: "https://z.example", models: [z1]}
          remote:
            proxy: http://10.0.0.2:8080
            apiKey: "${key}"
            models: [gpt-x, gpt-y]
            filters:
              stripParams: "${drop}, model"
              setParams: {temperature: "${temp}", label: "t=${temp}", model: "no"}
        """
    )
    assert list(d["peers"]) == ["remote", "zed"]  # sorted by id
    remote = d["peers"]["remote"]
    assert remote["apiKey"] == "secret-123"
    assert remote["models"] == ["gpt-x", "gpt-y"]
    assert remote["filters"] == {
        "stripParams": ["top_k"],
        "setParams": {"label": "t=0.3", "temperature": 0.3},
        "setParamsByID": {},
    }


def test_peer_timeouts_default_to_a_60s_response_header_timeout() -> None:
    plan = plan_of(
        """
        peers:
          a: {proxy: "http://a:1", models: [x]}
          b: {proxy: "http://b:1", models: [y], timeouts: {responseHeader: 0, connect: 3}}
        """
    )
    assert plan.peers["a"].timeouts == Timeouts(responseHeader=60)
    assert plan.peers["b"].timeouts == Timeouts(connect=3, responseHeader=0)
    assert plan.peer_for("y").id == "b"


def test_peer_macros_are_global_only() -> None:
    assert errors_of(
        """
        peers:
          p:
            proxy: http://p:1
            apiKey: "${MODEL_ID}"
            models: [x]
            filters:
              stripParams: "${nope}"
              setParams: {a: {b: ["${missing}"]}}
        """
    ) == sorted(
        [
            ("peers.p.apiKey", "unknown macro '${MODEL_ID}': peers get the global macros only"),
            ("peers.p.filters.stripParams", "unknown macro '${nope}'"),
            ("peers.p.filters.setParams", "unknown macro '${missing}'"),
        ]
    )


def test_peer_proxy_and_models_are_required() -> None:
    assert errors_of(
        """
        peers:
          a: {models: [x]}
          b: {proxy: "not a url", models: [y]}
          c: {proxy: "http://c:1", models: []}
        """
    ) == sorted(
        [
            ("peers.a.proxy", "proxy is required"),
            (
                "peers.b.proxy",
                "invalid peer proxy URL 'not a url': must be an absolute http:// or https:// URL with a host",
            ),
            ("peers.c.models", "peer models can not be empty"),
        ]
    )
