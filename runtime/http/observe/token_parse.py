"""Token figures in a model server's answer: pure parsing, no I/O, no state.

Three dialects, read side by side from one JSON document (a whole body, or one SSE `data:`
line of a stream):
- OpenAI `usage` (also Anthropic's, and the Responses API's under `response`/`message`):
  input, output and cached token counts;
- llama-server `timings`: counts, both rates, cached and draft tokens, and its processing
  time, overriding `usage`;
- vLLM `metrics` (sent on a stream's last chunk, or beside `usage` in a body): rates from
  `time_to_first_token_ms` (prompt: uncached input tokens over that time) and
  `mean_itl_ms` (generation: one token per inter-token latency), and speculative decoding
  counts from `speculative_decoding` (`num_draft_tokens`, `num_accepted_draft_tokens`, only
  when both are there). vLLM's own `tokens_per_second`, `generation_time_ms` and
  `queue_time_ms` are not used.

`tokens_from` reads one document; the caller merges documents (later ones win) and calls
`with_rates` on the result when it is read, because vLLM's rates need the final counts,
which may arrive in another chunk than `metrics`.
"""

from __future__ import annotations

from typing import Any

from llama_swap.runtime.core import json_codec

TOKEN_FIELDS = (
    "cache_tokens",
    "draft_tokens",
    "draft_acc_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_per_second",
    "tokens_per_second",
)
VLLM_METRICS = "_vllm_metrics"  # where a merged result keeps vLLM's `metrics` until `with_rates`
_MARKERS = (b'"usage"', b'"timings"', b'"metrics"')  # no figures without one of these keys


def has_markers(data: bytes) -> bool:
    """Whether `data` may hold token figures (cheap test before parsing JSON)."""
    return _MARKERS[0] in data or _MARKERS[1] in data or _MARKERS[2] in data


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _first(d: Any, *paths: str) -> Any:
    """The first of `paths` (dotted keys) that leads to a number in `d`, else None."""
    for path in paths:
        keys = _SPLIT.get(path)
        if keys is None:
            keys = _SPLIT[path] = tuple(path.split("."))
        cur = d
        for key in keys:
            cur = cur.get(key) if isinstance(cur, dict) else None
        if cur is not None and _num(cur) is not None:
            return cur
    return None


_SPLIT: dict[str, tuple[str, ...]] = {}  # dotted paths, split once (they are constants)


def _nested_usage(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    inner = doc.get(key)
    usage = inner.get("usage") if isinstance(inner, dict) else None
    return usage if isinstance(usage, dict) else None


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    pairs = {
        "input_tokens": _first(usage, "prompt_tokens", "input_tokens"),
        "output_tokens": _first(usage, "completion_tokens", "output_tokens"),
        "cache_tokens": _first(
            usage,
            "cache_read_input_tokens",
            "input_tokens_details.cached_tokens",
            "prompt_tokens_details.cached_tokens",
        ),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _timings(timings: dict[str, Any]) -> dict[str, Any]:
    pairs = {
        "input_tokens": _first(timings, "prompt_n"),
        "output_tokens": _first(timings, "predicted_n"),
        "prompt_per_second": _first(timings, "prompt_per_second"),
        "tokens_per_second": _first(timings, "predicted_per_second"),
        "cache_tokens": _first(timings, "cache_n"),
    }
    out = {k: v for k, v in pairs.items() if v is not None}
    drafted, accepted = _first(timings, "draft_n"), _first(timings, "draft_n_accepted")
    if drafted is not None and accepted is not None:  # a rate from half a pair would lie
        out["draft_tokens"], out["draft_acc_tokens"] = drafted, accepted
    return out


def tokens_from(doc: Any) -> tuple[dict[str, Any], float | None]:
    """Token figures found in one JSON document (known fields only; a vLLM `metrics`
    object kept under `VLLM_METRICS`) and the llama-server processing time in ms when
    `timings` carries it."""
    if isinstance(doc, list):  # /infill answers an array; the last element has the timings
        doc = doc[-1] if doc else None
    if not isinstance(doc, dict):
        return {}, None
    out: dict[str, Any] = {}
    for candidate in (doc.get("usage"), _nested_usage(doc, "response"), _nested_usage(doc, "message")):
        if isinstance(candidate, dict):
            out.update(_usage(candidate))
            break
    duration = None
    timings = doc.get("timings")
    if isinstance(timings, dict):
        out.update(_timings(timings))
        ms = [_first(timings, k) for k in ("prompt_ms", "predicted_ms")]
        if any(m is not None for m in ms):
            duration = float(sum(m for m in ms if m is not None))
    metrics = doc.get("metrics")
    if isinstance(metrics, dict):
        out[VLLM_METRICS] = metrics
    return out, duration


def with_rates(found: dict[str, Any]) -> dict[str, Any]:
    """The merged figures of a whole answer, with vLLM's `metrics` turned into rates and
    draft counts (they win over llama-server's where both are present)."""
    metrics = found.get(VLLM_METRICS)
    out = {k: v for k, v in found.items() if k != VLLM_METRICS}
    if not isinstance(metrics, dict):
        return out
    spec = metrics.get("speculative_decoding")
    if isinstance(spec, dict):
        drafted = _first(spec, "num_draft_tokens")
        accepted = _first(spec, "num_accepted_draft_tokens")
        if drafted is not None and accepted is not None:
            out["draft_tokens"], out["draft_acc_tokens"] = int(drafted), int(accepted)
    ttft = _first(metrics, "time_to_first_token_ms")
    if ttft is not None and ttft > 0:
        uncached = out.get("input_tokens", 0) - max(out.get("cache_tokens", 0), 0)
        out["prompt_per_second"] = uncached / (ttft / 1000)
    itl = _first(metrics, "mean_itl_ms")
    if itl is not None and itl > 0:
        out["tokens_per_second"] = 1000 / itl
    return out


def merge_document(found: dict[str, Any], payload: bytes) -> float | None:
    """Parse one JSON document (a body, or an SSE `data:` payload) into `found` (later
    documents win); the llama-server processing time in ms when it carries one.  A
    document that is not JSON adds nothing."""
    try:
        doc = json_codec.loads(payload)
    except ValueError:
        return None
    figures, ms = tokens_from(doc)
    found.update(figures)
    return ms
