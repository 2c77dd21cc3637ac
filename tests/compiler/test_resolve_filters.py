"""Filters."""

from __future__ import annotations

from llama_swap.compiler.filters import (
    sanitize_set_params,
    sanitize_set_params_by_id,
    sanitize_strip_params,
)

from .resolve_util import json_of, warnings_of


def test_strip_params_are_trimmed_deduplicated_sorted_without_model() -> None:
    assert sanitize_strip_params(" temperature, top_p ,model,, top_p , a") == (
        "a",
        "temperature",
        "top_p",
    )
    assert sanitize_strip_params("") == ()
    assert sanitize_strip_params("model, ,") == ()


def test_set_params_drop_model_and_sort_keys() -> None:
    out = sanitize_set_params({"z": 1, "model": "x", "a": {"nested": [1, 2]}})
    assert list(out.items()) == [("a", {"nested": [1, 2]}), ("z", 1)]
    assert sanitize_set_params({}) == {}


def test_set_params_by_id_sanitised_per_entry_and_sorted() -> None:
    out = sanitize_set_params_by_id({"b": {"model": "m", "y": 1, "x": 2}, "a": {"model": "m"}})
    assert list(out) == ["a", "b"]
    assert list(out["b"].items()) == [("x", 2), ("y", 1)]
    assert out["a"] == {}


def test_model_strip_params_get_macros_and_legacy_key_is_a_fallback() -> None:
    d = json_of(
        """
        macros: {extra: "top_k"}
        models:
          a: {cmd: "srv ${PORT}", filters: {stripParams: "temperature, ${extra}, model"}}
          b: {cmd: "srv ${PORT}", filters: {strip_params: "top_p"}}
          c: {cmd: "srv ${PORT}", filters: {stripParams: "x", strip_params: "ignored"}}
        """
    )
    assert [d["models"][m]["filters"]["stripParams"] for m in "abc"] == [
        ["temperature", "top_k"],
        ["top_p"],
        ["x"],
    ]


def test_model_set_params_get_macros_typed() -> None:
    text = """
        macros: {t: 0.5}
        models:
          a:
            cmd: srv ${PORT}
            filters: {setParams: {temperature: "${t}", label: "t=${t}", model: "no", max_tokens: 10}}
        """
    assert json_of(text)["models"]["a"]["filters"]["setParams"] == {
        "label": "t=0.5",
        "max_tokens": 10,
        "temperature": 0.5,
    }
    assert warnings_of(text) == []
