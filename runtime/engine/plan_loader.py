"""Loading a plan file written by `swap-compile`: the runtime's only config input.

Why a module of its own: the runtime never reads YAML, only this frozen JSON
artefact, and it must refuse a bad one with a message a user can act on
before anything starts:
- not JSON, or not a plan (wrong `planVersion`) -> PlanLoadError;
- not valid against `schema/plan.schema.json` (when the schema is present)
  -> PlanLoadError listing each violation with its JSON path;
- secrets redacted by `swap-compile` (`***REDACTED***` in `apiKeys` or a
  peer's `apiKey`) -> PlanLoadError telling how to produce a usable plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Protocol, TypeAlias

from llama_swap.compiler.plan import Plan, plan_from_dict

MAX_SCHEMA_ERRORS = 20


class PlanLoadError(Exception):
    """The plan file cannot be used; the message says why (one problem per line)."""


# A JSON document as `json.loads` returns it.
JsonValue: TypeAlias = (
    str | int | float | bool | None | Mapping[str, "JsonValue"] | Sequence["JsonValue"]
)


class _SchemaViolation(Protocol):
    """The part of a jsonschema `ValidationError` the message is built from."""

    @property
    def message(self) -> str: ...

    @property
    def absolute_path(self) -> Sequence[str | int]: ...


class _SchemaValidator(Protocol):
    """The part of a jsonschema validator this module uses (stubs may be absent)."""

    def iter_errors(self, instance: JsonValue) -> Iterator[_SchemaViolation]: ...


@cache
def _validator() -> _SchemaValidator:
    """A jsonschema validator for plan.schema.json (shipped as package data)."""
    # Imported on first use (as the compiler does), so what never validates a plan never
    # loads it; typed through the protocol above whether or not its stubs are installed.
    import jsonschema  # type: ignore[import-untyped, unused-ignore]

    text = files("llama_swap.schema").joinpath("plan.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    validator: _SchemaValidator = cls(schema)
    return validator


def validate_plan_dict(doc: Mapping[str, JsonValue], source: str = "<plan>") -> None:
    """Raise PlanLoadError when `doc` violates the plan schema."""
    validator = _validator()
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = [f"{source}: invalid plan ({len(errors)} problem(s)):"]
    for err in errors[:MAX_SCHEMA_ERRORS]:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        lines.append(f"  {where}: {err.message}")
    if len(errors) > MAX_SCHEMA_ERRORS:
        lines.append(f"  ... and {len(errors) - MAX_SCHEMA_ERRORS} more")
    raise PlanLoadError("\n".join(lines))


def plan_from_text(text: str, source: str = "<plan>") -> Plan:
    """Parse, validate and freeze a plan; refuse redacted secrets."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PlanLoadError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PlanLoadError(f"{source}: a plan is a JSON object, got {type(doc).__name__}")
    if "planVersion" not in doc:
        raise PlanLoadError(f"{source}: not a plan (no planVersion); compile it with swap-compile")
    validate_plan_dict(doc, source)
    try:
        plan = plan_from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanLoadError(f"{source}: invalid plan: {exc}") from exc
    if plan.has_redacted_secrets():
        raise PlanLoadError(
            f"{source}: the plan's secrets were redacted (apiKeys or a peer's apiKey is "
            "'***REDACTED***'), so it cannot be served; write it with "
            "`swap-compile --show-secrets`, or run `llama-swap --config ...` to compile in-process"
        )
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and load the plan at `path`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanLoadError(f"{p}: cannot read plan: {exc.strerror or exc}") from exc
    return plan_from_text(text, str(p))
