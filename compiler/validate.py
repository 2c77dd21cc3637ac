"""Check the merged document against schema/config.schema.json.

Every problem is collected (jsonschema's `iter_errors`), anyOf/oneOf noise is
collapsed to the most relevant branch (`best_match`), and messages are
reworded plainly.  Unknown keys are different: the Go original silently
ignores them, so we report each as a *warning* with a did-you-mean
suggestion (`healthCheckTimout` -> `healthCheckTimeout`); `--strict` (in the
pipeline) turns warnings into errors.

jsonschema is imported on first use only and the compiled validator is
cached, so `swap-compile --check` stays quick to start.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from llama_swap.compiler.diagnostics import Diagnostic, Severity
from llama_swap.compiler.load import config_schema
from llama_swap.compiler.sourcemap import KeyPath, SourceMap, display_path

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

_JSON_KIND = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "an empty value",
}
_SCHEMA_KIND = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "boolean": "a boolean (true/false)",
    "integer": "an integer",
    "number": "a number",
    "null": "null",
}

# Plain words for the schema's patterns (keyed by the pattern text in config.schema.json).
_PATTERN_HINTS = {
    "^[^ ]*$": "must not contain spaces",
    "^[A-Za-z_][A-Za-z0-9_]*=": "must look like NAME=value",
    r"^(/|\$\{|\s*none\s*$)": "must be a path starting with '/' or 'none'",
    "^[a-zA-Z0-9_-]+$": "may contain only letters, digits, '_' and '-'",
    "^[a-zA-Z0-9.-]{1,32}$": "must be 1 to 32 letters, digits, '-' or '.'",
    "^[a-zA-Z0-9_,. ${}-]*$": "must be a comma-separated list of parameter names",
    r"^[-+]?(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$": "must be a duration like '5s' or '1m30s'",
}


_REQUIRED = re.compile(r"^(.*) is a required property$")

MODEL_REF = "#/$defs/model"


class KeyStore(Protocol):
    def __contains__(self, key: object, /) -> bool: ...

    def add(self, key: str, /) -> None: ...


class ValidMemo:
    """Models already found valid, by canonical key, kept by compiler.session across compiles.

    Whether a value is valid against a subschema depends on the value alone, so a
    model whose key (its canonical JSON, from `key_of`) was valid before is valid
    now and its subtree is not walked again.  Only valid results are remembered:
    an invalid model is validated afresh, so its errors come out exactly as
    without the memo.
    """

    def __init__(self, key_of: Callable[[Any], str | None], valid: KeyStore | None = None) -> None:
        self.key_of = key_of
        self.valid: KeyStore = valid if valid is not None else set()
        self.hits = 0


_MEMO: ContextVar[ValidMemo | None] = ContextVar("swap_validate_memo", default=None)


def _memo_ref(validator: Any, ref: str, instance: Any, schema: Any) -> Iterator[Any]:
    memo = _MEMO.get()
    if memo is None or ref != MODEL_REF or not isinstance(instance, dict):
        yield from validator._validate_reference(ref=ref, instance=instance)
        return
    key = memo.key_of(instance)
    if key is not None and key in memo.valid:
        memo.hits += 1
        return
    errors = list(validator._validate_reference(ref=ref, instance=instance))
    if not errors and key is not None:
        memo.valid.add(key)
    yield from errors


@lru_cache(maxsize=1)
def _validator() -> Validator:
    # Imported here, not at the top, for start-up speed (see the module doc).
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.validators import extend  # type: ignore[import-untyped, unused-ignore]

    cls = extend(Draft202012Validator, {"$ref": _memo_ref})
    return cls(config_schema())  # type: ignore[no-any-return, unused-ignore]


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return _JSON_KIND.get(type(value), type(value).__name__)


def suggest(name: str, known: list[str]) -> str | None:
    """The known key `name` was most likely meant to be, if any is close enough."""
    for candidate in known:
        if candidate.lower() == name.lower():
            return candidate
    import difflib  # imported here for start-up speed: only unknown keys need it

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.65)
    return close[0] if close else None


def _unknown_keys(error: ValidationError, path: KeyPath, strict: bool) -> list[tuple[KeyPath, str]]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    known = list(schema.get("properties", {}))
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    out = []
    for key in error.instance:
        if key in known or any(p.search(key) for p in patterns):
            continue
        hint = suggest(key, known)
        message = f"unknown key '{key}'" + ("" if strict else " (ignored)")
        if hint:
            message += f"; did you mean '{hint}'?"
        out.append(((*path, key), message))
    return out


def _message(error: ValidationError) -> str:
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        names = " or ".join(_SCHEMA_KIND.get(w, w) for w in wanted)
        shown = "" if value is None else f" {_show(value)}"
        return f"expected {names}, got {_kind(value)}{shown}"
    if kind == "required":
        missing = _missing_key(error)
        return f"required key '{error.message if missing is None else missing}' is missing"
    if kind == "enum":
        return f"must be one of {', '.join(_show(v) for v in expected)}; got {_show(value)}"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"must be at least {expected}; got {_show(value)}"
    if kind in ("maximum", "exclusiveMaximum"):
        return f"must be at most {expected}; got {_show(value)}"
    if kind == "minLength":
        return (
            "must not be empty" if expected == 1 else f"must be at least {expected} characters long"
        )
    if kind == "maxLength":
        return f"must be at most {expected} characters long; got {len(value)}"
    if kind == "minItems":
        return f"must list at least {expected} item(s)"
    if kind == "minProperties":
        return f"must define at least {expected} entr{'y' if expected == 1 else 'ies'}"
    if kind == "uniqueItems":
        return "lists the same item more than once"
    if kind == "not":
        return f"{_show(value)} is a reserved name"
    if kind == "pattern":
        hint = _PATTERN_HINTS.get(expected, f"must match the pattern {expected}")
        return f"{_show(value)}: {hint}"
    return str(error.message)


def _missing_key(error: ValidationError) -> Any:
    """The key a `required` error is about (None when its message has an unknown form)."""
    match = _REQUIRED.match(error.message)
    return ast.literal_eval(match.group(1)) if match else None


def _collapse(error: ValidationError) -> ValidationError:
    """Replace an anyOf/oneOf error by its most relevant sub-error."""
    if not error.context:
        return error
    # imported here for start-up speed
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    return best_match([error]) or error


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind) or "type" not in schema


def _deref(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target
    return schema if isinstance(schema, dict) else {}


def _unset(value: Any, schema: Any, root: dict[str, Any]) -> Any:
    schema = _deref(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = _deref(props[key], root) if key in props else None
            if item is None and sub is not None and not _allows_null(sub):
                continue  # `key:` left empty: the setting keeps its default
            if sub is None and isinstance(extra, dict):
                sub = extra
            out[key] = _unset(item, sub, root) if sub is not None else item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_unset(item, schema["items"], root) for item in value]
    return value


def drop_empty_settings(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without settings left empty (`globalTTL:`, `models:`, `env:` ...).

    The Go original decodes an empty value into a setting as "not set", so the
    default applies; we do the same for every key the schema names, at any
    depth.  Empty values elsewhere stay and are judged by the schema: a
    macro, a model, a peer or a list item that is empty is still an error,
    and `metadata`/`setParams` pass nulls through.
    """
    schema = config_schema()
    return _unset(doc, schema, schema)  # type: ignore[no-any-return]


def validate(
    doc: dict[str, Any], smap: SourceMap, *, strict: bool = False, memo: ValidMemo | None = None
) -> list[Diagnostic]:
    """All schema problems of `doc`: errors, and warnings for unknown keys (errors when strict).

    `memo` skips models already known to be valid (same result, less work).
    """
    token = _MEMO.set(memo)
    try:
        return _validate(doc, smap, strict)
    finally:
        _MEMO.reset(token)


def _validate(doc: dict[str, Any], smap: SourceMap, strict: bool) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for raw in _validator().iter_errors(doc):
        error = _collapse(raw)
        path: KeyPath = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            severity: Severity = "error" if strict else "warning"
            for keys, message in _unknown_keys(error, path, strict):
                loc = smap.lookup(keys, prefer_value=False)
                out.append(Diagnostic(message, display_path(keys), loc, severity, keys=keys))
            continue
        message = _message(error)
        prefer_value: bool | None = None
        if "propertyNames" in error.absolute_schema_path:
            path = (*path, error.instance)
            message = f"key name {message}" if error.validator != "not" else message
            prefer_value = False
        elif error.validator == "required":
            missing = _missing_key(error)
            if missing is not None:
                path = (*path, missing)
                if smap.get(path) is not None:  # written, but left empty
                    message = f"required key '{path[-1]}' is empty"
        loc = smap.lookup(path, prefer_value=prefer_value)
        out.append(Diagnostic(message, display_path(path), loc, keys=path))
    return out
