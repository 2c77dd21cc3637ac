"""The reload coordinator: failures keep the running plan, reloads never overlap, none is lost."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.plan_diff import PlanDiff, diff_plans, plan_digest
from llama_swap.runtime.engine.reload import Loaded, Reloader, config_compiler, plan_file_loader


def plan_with(*ids: str) -> Plan:
    models = {
        mid: Model(id=mid, cmd=("srv", mid), cmdStop=None, proxy=f"http://127.0.0.1:{5800 + i}",
                   checkEndpoint="/health", ttl=0)
        for i, mid in enumerate(ids)
    }
    return Plan(models=MappingProxyType(models))


class FakeRouter:
    """Records applied plans; returns the diff like Router.apply_plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.applied: list[Plan] = []

    async def apply_plan(self, plan: Plan) -> PlanDiff:
        diff = diff_plans(self.plan, plan)
        self.plan = plan
        self.applied.append(plan)
        return diff


def loaded(plan: Plan) -> Loaded:
    return Loaded(plan, plan_digest(plan))


async def test_a_good_compile_is_applied_and_reported() -> None:
    old, new = plan_with("a"), plan_with("a", "b")
    router = FakeRouter(old)
    events: list[dict[str, Any]] = []
    r = Reloader(lambda: loaded(new), router.apply_plan, events.append, plan=old)
    outcome = await r.reload("test")
    assert outcome.ok and outcome.changed
    assert router.applied == [new]
    assert outcome.diff is not None and outcome.diff.added == ("b",)
    assert r.plan is new and r.digest == plan_digest(new)
    assert [e["type"] for e in events] == ["configReload"]
    assert events[0]["ok"] is True and "added 1" in events[0]["summary"]
    status = r.status()
    assert status["digest"] == plan_digest(new)
    assert status["lastError"] is None
    assert status["reloads"] == {"applied": 1, "unchanged": 0, "failed": 0}


async def test_a_failed_compile_keeps_the_running_plan_and_records_the_error(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n    ttl: soon\n")
    old = plan_with("a")
    router = FakeRouter(old)
    events: list[dict[str, Any]] = []
    r = Reloader(config_compiler(str(cfg), None), router.apply_plan, events.append, plan=old)
    outcome = await r.reload("watch")
    assert not outcome.ok
    assert router.applied == []  # nothing was touched
    assert r.plan is old and r.digest == plan_digest(old)
    error = r.status()["lastError"]
    assert error is not None
    assert error["message"].startswith(f"{cfg}:4:")  # file:line:col of the bad value
    assert "models.a.ttl" in error["message"]
    assert any(d["file"] == str(cfg) and d["line"] == 4 for d in error["diagnostics"])
    assert events[-1]["ok"] is False and events[-1]["error"]["message"] == error["message"]

    # The next good save applies and clears the error.
    cfg.write_text("models:\n  a:\n    cmd: srv --port ${PORT}\n    ttl: 5\n")
    outcome = await r.reload("watch")
    assert outcome.ok and outcome.changed
    assert r.status()["lastError"] is None
    assert r.plan.models["a"].ttl == 5
    assert r.status()["reloads"] == {"applied": 1, "unchanged": 0, "failed": 1}


async def test_an_identical_plan_is_not_applied_again() -> None:
    p = plan_with("a")
    router = FakeRouter(p)
    r = Reloader(lambda: loaded(plan_with("a")), router.apply_plan, plan=p)
    outcome = await r.reload()
    assert outcome.ok and not outcome.changed
    assert router.applied == []
    assert r.status()["reloads"]["unchanged"] == 1


async def test_requests_during_a_run_coalesce_into_exactly_one_more_run() -> None:
    gate = threading.Event()
    calls: list[int] = []
    plans = [plan_with("a", f"m{i}") for i in range(10)]

    def compile_fn() -> Loaded:
        calls.append(len(calls))
        if len(calls) == 1:
            gate.wait(10)
        return loaded(plans[len(calls)])

    router = FakeRouter(plan_with("a"))
    r = Reloader(compile_fn, router.apply_plan, plan=router.plan)
    first = asyncio.ensure_future(r.reload("first"))
    while not calls:  # the first run is compiling
        await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(r.reload(f"later{i}")) for i in range(3)]
    await asyncio.sleep(0.05)
    assert r.reloading and len(calls) == 1
    gate.set()
    out1 = await first
    outs = await asyncio.gather(*later)
    assert len(calls) == 2  # one extra run served all three later requests
    assert out1.reason == "first"
    assert {o.reason for o in outs} == {"later0, later1, later2"}
    assert router.applied == [plans[1], plans[2]]


async def test_request_is_fire_and_forget_and_aclose_waits() -> None:
    new = plan_with("a", "b")
    router = FakeRouter(plan_with("a"))
    r = Reloader(lambda: loaded(new), router.apply_plan, plan=router.plan)
    r.request("SIGHUP")
    await r.aclose()
    assert router.applied == [new]
    with pytest.raises(RuntimeError):
        await r.reload()


async def test_a_failing_apply_keeps_the_plan() -> None:
    old = plan_with("a")

    async def broken_apply(plan: Plan) -> PlanDiff:
        raise ValueError("routing.router is 'matrix' but the plan has no matrix")

    r = Reloader(lambda: loaded(plan_with("b")), broken_apply, plan=old)
    outcome = await r.reload()
    assert not outcome.ok
    assert r.plan is old
    assert "matrix" in r.status()["lastError"]["message"]


async def test_plan_file_loader_reports_a_broken_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    old = plan_with("a")
    router = FakeRouter(old)
    r = Reloader(plan_file_loader(str(path)), router.apply_plan, plan=old)
    outcome = await r.reload()
    assert not outcome.ok
    assert str(path) in r.status()["lastError"]["message"]
    assert router.applied == []


# -- sticky ports and the compile session ------------------------------------------------------

PORT_MODEL = "  {mid}:\n    cmd: srv --port ${{PORT}}\n"


def write_models(path: Path, *ids: str) -> None:
    path.write_text("models:\n" + "".join(PORT_MODEL.format(mid=mid) for mid in ids))


@pytest.mark.parametrize("exact", [True, False], ids=["ports-from-warm-up", "ports-derived"])
async def test_adding_a_model_that_sorts_first_keeps_the_running_models_ports(
    tmp_path: Path, exact: bool
) -> None:
    from llama_swap.compiler.pipeline import compile_paths

    cfg = tmp_path / "config.yaml"
    write_models(cfg, "m", "n")
    running = compile_paths(str(cfg), None).plan  # as the startup compile does
    if not exact:  # a running plan the compiler never saw: ports are read from the plan
        running = Plan(models=running.models)
    router = FakeRouter(running)
    r = Reloader(config_compiler(str(cfg), None), router.apply_plan, plan=running)
    write_models(cfg, "a", "m", "n")
    outcome = await r.reload("test")
    assert outcome.diff is not None
    assert outcome.diff.added == ("a",) and outcome.diff.kept == ("m", "n")
    assert [r.plan.models[mid].proxy for mid in "mna"] == [
        "http://localhost:5800", "http://localhost:5801", "http://localhost:5802",
    ]
    # a later reload keeps them too, and the freed port of a removed model is reused
    write_models(cfg, "a", "b", "n")
    outcome = await r.reload("test")
    assert outcome.diff is not None and outcome.diff.kept == ("a", "n")
    assert r.plan.models["b"].proxy == "http://localhost:5800"
    await r.aclose()


async def test_the_session_compile_digest_is_the_plain_digest(tmp_path: Path) -> None:
    import hashlib

    from llama_swap.compiler.plan import plan_to_json

    cfg = tmp_path / "config.yaml"
    compiler_fn = config_compiler(str(cfg), None)
    for ids in (("m",), ("m", "n"), ("a", "m", "n")):
        write_models(cfg, *ids)
        result = compiler_fn()
        assert result.digest == hashlib.sha256(plan_to_json(result.plan).encode()).hexdigest()


# -- compile warnings and --strict ------------------------------------------------------------

TYPO_TTL = (
    "models:\n  a:\n    cmd: srv --port ${PORT}\n    proxy: http://127.0.0.1:${PORT}\n"
    "    tll: 300\n"
)


class Captured(logging.Handler):
    """Records of one logger, however the "llama_swap" loggers were wired by other tests."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)
        self._saved_level = self.logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Captured:
        self.logger.addHandler(self)
        self.logger.setLevel(self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._saved_level)


async def test_a_reload_with_an_unknown_key_applies_and_reports_the_warning_with_file_and_line(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(TYPO_TTL)
    old = plan_with("b")
    router = FakeRouter(old)
    events: list[dict[str, Any]] = []
    r = Reloader(config_compiler(str(cfg), None), router.apply_plan, events.append, plan=old)
    with Captured("llama_swap.reload", logging.WARNING) as captured:
        outcome = await r.reload("watch")
    assert outcome.ok and outcome.changed
    assert r.plan.models["a"].ttl == 0  # what the typo silently left at its default

    [warning] = r.status()["lastReload"]["warnings"]
    assert (warning["file"], warning["line"], warning["column"]) == (str(cfg), 5, 5)
    assert warning["path"] == "models.a.tll" and warning["severity"] == "warning"
    assert "unknown key 'tll'" in warning["message"]
    assert r.status()["warnings"] == [warning]  # the running plan's, until a clean reload
    assert events[-1]["warnings"] == [warning]

    logged = [rec for rec in captured.records if rec.levelno == logging.WARNING]
    assert any(f"{cfg}:5:5: warning: models.a.tll: unknown key 'tll'" in rec.getMessage()
               for rec in logged), [rec.getMessage() for rec in logged]

    cfg.write_text(TYPO_TTL.replace("tll", "ttl"))
    outcome = await r.reload("watch")
    assert outcome.ok and r.plan.models["a"].ttl == 300
    assert r.status()["lastReload"]["warnings"] == [] and r.status()["warnings"] == []


async def test_a_failed_reload_keeps_reporting_the_running_plans_warnings(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(TYPO_TTL)
    old = plan_with("b")
    r = Reloader(config_compiler(str(cfg), None), FakeRouter(old).apply_plan, plan=old)
    assert (await r.reload()).ok
    cfg.write_text("models: [broken\n")
    assert not (await r.reload()).ok
    assert [w["path"] for w in r.status()["warnings"]] == ["models.a.tll"]


async def test_strict_refuses_a_reload_with_an_unknown_key_and_keeps_the_running_plan(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(TYPO_TTL)
    old = plan_with("b")
    router = FakeRouter(old)
    r = Reloader(config_compiler(str(cfg), None, strict=True), router.apply_plan, plan=old)
    outcome = await r.reload("watch")
    assert not outcome.ok and router.applied == []
    assert r.plan is old
    error = r.status()["lastError"]
    assert error["message"].startswith(f"{cfg}:5:5: models.a.tll: unknown key 'tll'")
    assert [(d["line"], d["severity"]) for d in error["diagnostics"]] == [(5, "error")]
    assert r.status()["reloads"]["failed"] == 1


async def test_the_startup_plans_warnings_are_reported_once_the_warm_up_compile_matched_it(
    tmp_path: Path,
) -> None:
    from llama_swap.compiler.pipeline import compile_paths

    cfg = tmp_path / "config.yaml"
    cfg.write_text(TYPO_TTL)
    running = compile_paths(str(cfg), None).plan  # what the CLI compiled at startup
    r = Reloader(config_compiler(str(cfg), None), FakeRouter(running).apply_plan, plan=running)
    await r.aclose()  # waits for the warm-up compile
    assert [w["path"] for w in r.status()["warnings"]] == ["models.a.tll"]
