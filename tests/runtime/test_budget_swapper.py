"""The budget eviction policy, decision by decision (pure: an `EvictionContext` in,
an `Eviction` out).  Also how group and matrix treat pinned models."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from llama_swap.compiler.plan import Budget, Group, Matrix, MatrixSet, Model, Plan, Routing
from llama_swap.runtime.core.schedulers.base import Evicted, EvictionContext
from llama_swap.runtime.core.swappers import (
    BudgetSwapper,
    GroupSwapper,
    MatrixSwapper,
    make_swapper,
    pinned_by_plan,
)
from llama_swap.runtime.core.swappers.budget import budget_usage
from tests.fakes import make_models


def models(**sizes: dict[str, float]) -> dict[str, Model]:
    base = make_models(*sizes)
    return {mid: replace(m, resources=MappingProxyType(sizes[mid])) for mid, m in base.items()}


def budget(max_loaded: int = 0, costs: dict[str, int] | None = None, probes: tuple[str, ...] = (), **caps: float) -> Budget:
    return Budget(
        maxLoaded=max_loaded,
        resources=MappingProxyType(caps),
        probes=MappingProxyType({r: f"probe-{r}" for r in probes}),
        evictCosts=MappingProxyType(costs or {}),
    )


def ctx(*running: str, **kw: object) -> EvictionContext:
    return EvictionContext(running=tuple(running), **kw)  # type: ignore[arg-type]


VRAM = models(big={"vram": 18000, "ram": 4000}, small={"vram": 5000}, mid={"vram": 9000}, free={})


def vram_swapper(**kw: object) -> BudgetSwapper:
    return BudgetSwapper(budget(vram=24000, ram=64000, **kw), VRAM)  # type: ignore[arg-type]


# -- fitting without evicting ---------------------------------------------------


def test_a_target_that_fits_beside_what_runs_starts_without_evicting() -> None:
    d = vram_swapper().decide("small", ctx("big"))
    assert (d.evict, d.wait, d.refuse) == ((), False, "")
    assert d.line == "budget: model=small evict=[] vram 23000/24000 ram 4000/64000"


def test_a_model_without_resources_counts_zero_of_each_and_one_toward_max_loaded() -> None:
    s = BudgetSwapper(budget(max_loaded=2, vram=24000), VRAM)
    assert s.decide("free", ctx("big")).evict == ()
    d = s.decide("free", ctx("big", "small"), )
    assert d.models == ("big",) or d.models == ("small",)


def test_an_already_loaded_target_needs_nothing() -> None:
    d = vram_swapper().decide("big", ctx("big", "mid", target_loaded=True))
    assert d.evict == () and not d.wait


# -- LRU eviction -----------------------------------------------------------------


def test_the_least_recently_used_idle_model_is_evicted_with_its_reason() -> None:
    d = vram_swapper().decide(
        "mid", ctx("big", "small", last_used={"big": 100.0, "small": 59.0}, now=100.0)
    )
    # 23000 + 9000 > 24000: small (used 41 s ago) goes first; 18000 + 9000 still > 24000
    assert d.evict == (
        Evicted("small", "vram", "budget vram 23000/24000 needs 9000: evicting small, idle 41 s"),
        Evicted("big", "vram", "budget vram 18000/24000 needs 9000: evicting big, idle 0 s"),
    )


def test_eviction_stops_as_soon_as_the_target_fits() -> None:
    d = vram_swapper().decide(
        "small", ctx("mid", "small2", last_used={"mid": 1.0}, now=5.0)
    )  # small2 is unknown to the plan: it counts nothing
    assert d.evict == ()
    d = vram_swapper().decide("big", ctx("mid", "small", last_used={"mid": 1.0, "small": 2.0}))
    assert d.models == ("mid",)  # 5000 + 18000 fits once mid is gone


def test_max_loaded_evicts_by_count_least_recently_used_first() -> None:
    s = BudgetSwapper(budget(max_loaded=2), make_models("a", "b", "c"))
    d = s.decide("c", ctx("a", "b", last_used={"a": 7.0, "b": 3.0}, now=10.0))
    assert d.evict == (Evicted("b", "maxLoaded", "budget maxLoaded 2/2 needs 1: evicting b, idle 7 s"),)


def test_ties_go_to_the_lower_evict_cost_then_the_model_id() -> None:
    plan_models = make_models("a", "b", "c", "d")
    same = {"a": 1.0, "b": 1.0, "c": 1.0}
    s = BudgetSwapper(budget(max_loaded=3), plan_models)
    assert s.decide("d", ctx("a", "b", "c", last_used=same)).models == ("a",)
    costly = BudgetSwapper(budget(max_loaded=3, costs={"a": 5}), plan_models)
    assert costly.decide("d", ctx("a", "b", "c", last_used=same)).models == ("b",)


def test_a_model_never_used_counts_as_least_recently_used() -> None:
    s = BudgetSwapper(budget(max_loaded=1), make_models("a", "b", "c"))
    d = s.decide("c", ctx("a", last_used={}))
    assert d.evict == (Evicted("a", "maxLoaded", "budget maxLoaded 1/1 needs 1: evicting a, never used"),)


# -- what is never evicted ------------------------------------------------------------


def test_busy_models_are_skipped_and_the_next_idle_one_is_evicted() -> None:
    d = vram_swapper().decide(
        "mid", ctx("big", "small", busy=frozenset({"small"}), last_used={"small": 0.0, "big": 9.0})
    )
    assert d.models == ("big",)


def test_a_pinned_model_is_never_evicted() -> None:
    d = vram_swapper().decide(
        "mid", ctx("big", "small", pinned=frozenset({"small"}), last_used={"small": 0.0, "big": 9.0})
    )
    assert d.models == ("big",)


def test_when_only_busy_models_could_make_room_the_target_waits_and_nothing_is_evicted() -> None:
    d = vram_swapper().decide(
        "mid", ctx("big", "small", busy=frozenset({"big"}), last_used={"small": 0.0})
    )
    assert d.wait and d.evict == () and not d.refuse
    assert d.line == "budget: model=mid waits: budget vram 18000/24000 needs 9000"


def test_a_target_that_cannot_fit_beside_the_pinned_models_is_refused() -> None:
    d = vram_swapper().decide("mid", ctx("big", pinned=frozenset({"big"})))
    assert d.refuse == (
        "model mid does not fit beside the pinned models big: budget vram 18000/24000 needs 9000"
    )
    s = BudgetSwapper(budget(max_loaded=1), make_models("a", "b"))
    assert s.decide("b", ctx("a", pinned=frozenset({"a"}))).refuse


# -- probes -----------------------------------------------------------------------


def test_a_probed_resource_without_a_fresh_result_asks_for_the_probe_first() -> None:
    s = vram_swapper(probes=("vram",))
    d = s.decide("small", ctx("big"))
    assert d.probe == ("vram",) and d.evict == ()
    assert s.decide("free", ctx("big")).probe == ()  # free uses no vram: no probe needed


def test_the_probed_free_amount_plus_what_is_evicted_must_cover_the_target() -> None:
    s = vram_swapper(probes=("vram",))
    # declared: 18000 + 5000 fits in 24000, but something outside holds memory: 2000 free
    d = s.decide("small", ctx("big", free={"vram": 2000.0}, last_used={"big": 0.0}, now=3.0))
    assert d.evict == (
        Evicted(
            "big",
            "probe:vram",
            "budget vram free 2000 (probed) + 0 evicted needs 5000: evicting big, idle 3 s",
        ),
    )
    assert s.decide("small", ctx("big", free={"vram": 6000.0})).evict == ()


def test_when_the_probe_says_no_room_even_after_evicting_everything_the_target_waits() -> None:
    s = vram_swapper(probes=("vram",))
    d = s.decide("small", ctx("free", free={"vram": 100.0}))  # free holds no vram
    assert d.wait and not d.refuse and d.evict == ()


def test_a_failed_probe_leaves_the_declared_sizes_in_charge() -> None:
    s = vram_swapper(probes=("vram",))
    assert s.decide("small", ctx("big", free={"vram": None})).evict == ()


# -- usage, plans, pins from the plan ------------------------------------------------


def test_budget_usage_sums_declared_sizes_of_the_loaded_models() -> None:
    u = budget_usage(budget(max_loaded=3, vram=24000, ram=64000), VRAM, ["small", "big", "gone"])
    assert u.to_json() == {
        "maxLoaded": 3,
        "loaded": 2,
        "models": ["big", "small"],
        "resources": {"vram": {"capacity": 24000, "used": 23000}, "ram": {"capacity": 64000, "used": 4000}},
    }


def test_make_swapper_builds_the_budget_policy_and_plan_pins_are_persistent_groups() -> None:
    plan = Plan(routing=Routing(router="budget", budget=budget(max_loaded=1)), models=MappingProxyType(dict(make_models("a"))))
    assert isinstance(make_swapper(plan), BudgetSwapper)
    groups = MappingProxyType({"p": Group("p", ("a",), persistent=True), "q": Group("q", ("b",))})
    assert pinned_by_plan(Plan(routing=Routing(groups=groups))) == frozenset({"a"})


def test_group_keeps_a_pinned_model_of_another_group_like_a_persistent_one() -> None:
    g = GroupSwapper({}, ("a", "b", "c"))  # everyone in (default): swap + exclusive
    split = GroupSwapper(
        MappingProxyType({"x": Group("x", ("a",)), "y": Group("y", ("b", "c"))}), ("a", "b", "c")
    )
    assert split.decide("a", ctx("b", "c", pinned=frozenset({"b"}))).models == ("c",)
    # same swap group: there is no alternative, the pinned model goes and the line says so
    d = g.decide("a", ctx("b", pinned=frozenset({"b"})))
    assert d.evict == (Evicted("b", "group", "group (default) (same group, swap, pinned but no alternative): evicting b for a"),)


def test_matrix_prefers_a_set_that_keeps_the_pinned_models() -> None:
    m = MatrixSwapper(
        Matrix(
            vars=MappingProxyType({"a": "a", "b": "b", "c": "c"}),
            evictCosts=MappingProxyType({}),
            sets=(MatrixSet("ab", "a & b", (("a", "b"),)), MatrixSet("ac", "a & c", (("a", "c"),))),
        )
    )
    assert m.decide("a", ctx("b", "c")).models == ("c",)  # plain solver: ab first
    assert m.decide("a", ctx("b", "c", pinned=frozenset({"c"}))).models == ("b",)
    # no set holds a, b and c: no choice, the plain solver decides
    d = m.decide("a", ctx("b", "c", pinned=frozenset({"b", "c"})))
    assert d.models == ("c",) and "pinned, but no set keeps it" in d.evict[0].line
