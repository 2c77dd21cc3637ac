"""Merging fragments, with conflicts that name both files and lines."""

from __future__ import annotations

import pytest

from llama_swap.compiler.merge import merge_fragments
from llama_swap.compiler.parse import parse_source

from .frontend_util import compile_err, compile_ok, src, where

M = "srv --port ${PORT}"


def merged(*named: tuple[str, str]):
    return merge_fragments([parse_source(name, text) for name, text in named])


@pytest.mark.parametrize(
    ("section", "first", "second"),
    [
        ("models", "models:\n  dup:\n    cmd: a\n", "x: 1\nmodels:\n  dup:\n    cmd: b\n"),
        (
            "peers",
            "peers:\n  dup:\n    proxy: http://a\n",
            "x: 1\npeers:\n  dup:\n    proxy: http://b\n",
        ),
        (
            "groups",
            "groups:\n  dup:\n    members: [a]\n",
            "x: 1\ngroups:\n  dup:\n    members: [b]\n",
        ),
        ("profiles", "profiles:\n  dup: [a]\n", "x: 1\nprofiles:\n  dup: [b]\n"),
    ],
)
def test_an_entity_defined_twice_names_both_files_and_lines(
    section: str, first: str, second: str
) -> None:
    _, _, diags = merged(("a.yaml", first), ("b.yaml", second))
    (d,) = diags
    assert d.message == f"{section}.dup defined in a.yaml:2 and again in b.yaml:3"
    assert where(d) == "b.yaml:3:3"
    assert d.related is not None and (d.related.file, d.related.line) == ("a.yaml", 2)
    assert d.keys == (section, "dup")


def test_routing_groups_and_matrix_are_identity_maps_too() -> None:
    a = "routing:\n  router:\n    settings:\n      groups:\n        g1: {members: [a]}\n"
    b = "routing:\n  router:\n    settings:\n      groups:\n        g1: {members: [b]}\n        g2: {members: [c]}\n"
    doc, _, diags = merged(("a.yaml", a), ("b.yaml", b))
    assert [d.message for d in diags] == [
        "routing.router.settings.groups.g1 defined in a.yaml:5 and again in b.yaml:5"
    ]
    assert list(doc["routing"]["router"]["settings"]["groups"]) == ["g1", "g2"]
    m = "matrix:\n  vars: {a: x}\n"
    _, _, diags = merged(("a.yaml", m), ("b.yaml", "matrix:\n  vars: {b: y}\n"))
    assert [d.message for d in diags] == ["matrix.vars defined in a.yaml:2 and again in b.yaml:2"]


def test_distinct_entities_from_several_files_are_combined_in_file_order() -> None:
    doc, _, diags = merged(
        ("a.yaml", "models:\n  b: {cmd: x}\n"), ("b.yaml", "models:\n  a: {cmd: y}\n")
    )
    assert diags == [] and list(doc["models"]) == ["b", "a"]


def test_plain_mappings_merge_recursively() -> None:
    doc, _, diags = merged(
        ("a.yaml", "macros:\n  a: 1\nperformance:\n  every: 10s\n"),
        ("b.yaml", "macros:\n  b: 2\n  a: 1\nperformance:\n  disabled: true\n"),
    )
    assert diags == []
    assert doc == {"macros": {"a": 1, "b": 2}, "performance": {"every": "10s", "disabled": True}}


def test_lists_concatenate_earlier_file_first() -> None:
    doc, _, diags = merged(
        ("a.yaml", "apiKeys: [k1]\nhooks: {on_startup: {preload: [a]}}\n"),
        ("b.yaml", "apiKeys: [k2, k3]\nhooks: {on_startup: {preload: [b]}}\n"),
    )
    assert diags == []
    assert doc["apiKeys"] == ["k1", "k2", "k3"]
    assert doc["hooks"]["on_startup"]["preload"] == ["a", "b"]


def test_equal_scalars_are_fine_different_ones_conflict() -> None:
    _, _, diags = merged(
        ("a.yaml", "globalTTL: 10\nlogLevel: info\n"),
        ("b.yaml", "logLevel: info\nglobalTTL: 20\n"),
    )
    (d,) = diags
    assert d.message.startswith("globalTTL is set to 10 in a.yaml:1 and to 20 in b.yaml:2")
    assert where(d) == "b.yaml:2:1"


def test_a_number_and_the_same_digits_as_a_string_conflict() -> None:
    _, _, diags = merged(("a.yaml", "startPort: 100\n"), ("b.yaml", "startPort: '100'\n"))
    assert [d.message.split(";")[0] for d in diags] == [
        'startPort is set to 100 in a.yaml:1 and to "100" in b.yaml:1'
    ]


def test_null_yields_to_a_value_on_either_side() -> None:
    doc, smap, diags = merged(
        ("a.yaml", "globalTTL:\nmodels:\n"),
        ("b.yaml", "globalTTL: 5\nmodels:\n  m: {cmd: x}\nlogLevel: debug\n"),
        ("c.yaml", "logLevel:\n"),
    )
    assert diags == []
    assert doc == {"globalTTL": 5, "models": {"m": {"cmd": "x"}}, "logLevel": "debug"}
    assert smap.lookup(("globalTTL",)) is not None and smap.lookup(("globalTTL",)).file == "b.yaml"


def test_kind_mismatch_is_a_conflict() -> None:
    _, _, diags = merged(("a.yaml", "apiKeys: key\n"), ("b.yaml", "apiKeys: [k]\n"))
    assert [d.message for d in diags] == ["apiKeys is a string in a.yaml:1 but a list in b.yaml:1"]


def test_all_conflicts_are_reported_in_one_run() -> None:
    err = compile_err(
        src("a.yaml", f"globalTTL: 1\nstartPort: 9000\nmodels:\n  x: {{cmd: '{M}'}}\n"),
        src("b.yaml", f"globalTTL: 2\nmodels:\n  x: {{cmd: '{M}'}}\n"),
        src("c.yaml", "startPort: 9001\n"),
    )
    assert [where(d) for d in err.errors] == ["b.yaml:1:1", "b.yaml:3:3", "c.yaml:1:1"]


def test_locations_of_list_items_from_a_later_file_point_into_that_file() -> None:
    err = compile_err(
        src("a.yaml", "apiKeys: [good1, good2]\n"),
        src("b.yaml", "\napiKeys:\n  - fine\n  - has space\n"),
    )
    (d,) = err.errors
    assert d.keys == ("apiKeys", 3)
    assert where(d) == "b.yaml:4:5"


def test_macros_from_one_file_are_usable_in_another() -> None:
    result = compile_ok(
        src("a.yaml", "macros:\n  bin: /opt/llama-server\n"),
        src("b.yaml", "models:\n  m:\n    cmd: ${bin} --port ${PORT}\n"),
    )
    assert result.plan.models["m"].cmd[0] == "/opt/llama-server"


def test_a_model_split_across_files_is_refused_even_without_overlapping_keys() -> None:
    err = compile_err(
        src("a.yaml", f"models:\n  m:\n    cmd: {M}\n"),
        src("b.yaml", "models:\n  m:\n    ttl: 5\n"),
    )
    assert [d.message for d in err.errors] == ["models.m defined in a.yaml:2 and again in b.yaml:2"]
