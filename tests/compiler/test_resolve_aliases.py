"""Aliases, setParamsByID auto-aliases and peer names beside local ones."""

from __future__ import annotations

from llama_swap.compiler.plan import PeerModel

from .resolve_util import errors_of, json_of, plan_of, warnings_of


def test_alias_map_is_sorted_by_alias_and_lookup_prefers_ids() -> None:
    plan = plan_of(
        """
        models:
          m1: {cmd: "srv ${PORT}", aliases: [zeta, alpha]}
          m2: {cmd: "srv ${PORT}", aliases: [beta]}
        """
    )
    assert list(plan.aliases.items()) == [("alpha", "m1"), ("beta", "m2"), ("zeta", "m1")]
    assert plan.models["m1"].aliases == ("zeta", "alpha")  # the model's own order is kept
    assert (plan.resolve("m2"), plan.resolve("zeta"), plan.resolve("nope")) == ("m2", "m1", None)


def test_aliases_are_unique_across_models() -> None:
    assert errors_of(
        """
        models:
          m1: {cmd: "srv ${PORT}", aliases: [m, same]}
          m2: {cmd: "srv ${PORT}", aliases: [same]}
        """
    ) == [("models.m2.aliases[0]", "duplicate alias 'same': already used by model 'm1'")]


def test_alias_repeated_on_one_model_is_an_error() -> None:
    assert errors_of("models: {m: {cmd: 'srv ${PORT}', aliases: [x, x]}}") == [
        ("models.m.aliases[1]", "duplicate alias 'x': already used by this model")
    ]


def test_alias_equal_to_a_model_id_warns() -> None:
    assert warnings_of(
        """
        models:
          m1: {cmd: "srv ${PORT}", aliases: [m2]}
          m2: {cmd: "srv ${PORT}"}
        """
    ) == [
        (
            "models.m1.aliases[0]",
            "alias 'm2' has no effect: a model with that id exists and model ids win over aliases",
        )
    ]


def test_set_params_by_id_keys_become_aliases() -> None:
    plan = plan_of(
        """
        models:
          qwen:
            cmd: srv ${PORT}
            aliases: [qwen-high]
            filters:
              setParamsByID:
                "${MODEL_ID}:low": {temperature: 0.2, model: dropped}
                qwen-high: {temperature: 1.0}
                "${MODEL_ID}": {top_k: 20}
        """
    )
    q = plan.models["qwen"]
    assert q.aliases == ("qwen-high", "qwen:low")
    assert dict(plan.aliases) == {"qwen-high": "qwen", "qwen:low": "qwen"}
    assert {k: dict(v) for k, v in q.filters.setParamsByID.items()} == {
        "qwen": {"top_k": 20},
        "qwen-high": {"temperature": 1.0},
        "qwen:low": {"temperature": 0.2},
    }


def test_set_params_by_id_key_conflicts() -> None:
    assert errors_of(
        """
        models:
          a:
            cmd: srv ${PORT}
            aliases: [taken]
          b:
            cmd: srv ${PORT}
            filters:
              setParamsByID:
                a: {x: 1}
                taken: {x: 2}
        """
    ) == sorted(
        [
            ("models.b.filters.setParamsByID.a", "key 'a' conflicts with an existing model ID"),
            (
                "models.b.filters.setParamsByID.taken",
                "duplicate alias 'taken' in filters.setParamsByID, already used by model a",
            ),
        ]
    )


def test_same_set_params_by_id_key_in_two_models() -> None:
    assert errors_of(
        """
        models:
          a: {cmd: "srv ${PORT}", filters: {setParamsByID: {shared: {x: 1}}}}
          b: {cmd: "srv ${PORT}", filters: {setParamsByID: {shared: {x: 2}}}}
        """
    ) == [
        (
            "models.b.filters.setParamsByID.shared",
            "duplicate alias 'shared' in filters.setParamsByID, already used by model a",
        )
    ]


def test_set_params_by_id_macros_in_keys_and_typed_values() -> None:
    d = json_of(
        """
        macros: {hot: 1.5, tag: fast}
        models:
          m:
            cmd: srv ${PORT}
            filters:
              setParamsByID:
                "m-${tag}": {temperature: "${hot}", note: "t=${hot}"}
        """
    )
    assert d["models"]["m"]["filters"]["setParamsByID"] == {
        "m-fast": {"note": "t=1.5", "temperature": 1.5}
    }


def test_unknown_macro_in_set_params_by_id() -> None:
    assert errors_of(
        """
        models:
          m:
            cmd: srv ${PORT}
            filters:
              setParamsByID:
                "${nokey}": {a: 1}
                ok: {a: "${noval}"}
        """
    ) == sorted(
        [
            ("models.m.filters.setParamsByID.${nokey}", "unknown macro '${nokey}'"),
            ("models.m.filters.setParamsByID.ok", "unknown macro '${noval}'"),
        ]
    )


def test_bare_peer_names_may_collide_with_local_names_the_full_name_reaches_the_peer() -> None:
    plan = plan_of(
        """
        models:
          local: {cmd: "srv ${PORT}", aliases: [nick]}
        peers:
          remote:
            proxy: http://10.0.0.2:8080
            models: [local, nick, other]
        """
    )
    assert plan.resolve("local") == "local"  # the local model wins the bare name
    assert plan.peer_model("remote/local") == PeerModel("remote", "local")
    assert plan.peer_model("other") == PeerModel("remote", "other")
