"""How a request and its answer cross the proxy: the rules both front doors forward by.

- Hop-by-hop headers (RFC 9110 7.6.1: Connection, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, the proxy credentials, plus the legacy Proxy-Connection)
  and every name the `Connection` header lists describe one connection, not the
  message: they are dropped in both directions.
- The request goes upstream with the client's headers minus those, minus
  Content-Length (each front door frames the body anew), `Host` as the client sent it,
  and `X-Forwarded-For` carrying the earlier proxies' values with the client's address
  appended, in one header at the end, as Go's reverse proxy writes it.
- Real llama-server closes its connection after every streamed answer, so a pooled
  connection can be dead when it is reused.  A connection seen closed while idle is
  dropped before it is written to.  A request that fails on a *reused* connection before
  any response byte arrived is sent again once, on a fresh connection, only when nothing
  of it can have been processed: nothing of it was written, or it is idempotent (GET,
  HEAD, OPTIONS, TRACE, or an `Idempotency-Key`) and its body can be sent again.  An
  upstream that read a POST and closed without answering may have run it (a generation,
  a tool call): that is a 502, never a second run.
- A connection whose answer came chunked (no Content-Length: event streams, mostly)
  goes back to no pool.  Real llama-server closes its connection after every such
  answer, but only a moment after the answer's last byte; a request written in that
  moment is never read, and a POST may not be sent again.  One new connection per
  streamed answer costs little beside the stream itself.
- Small answers with a known length are relayed in one write once complete, so an
  upstream that dies in the middle of one is a clean 502, not a truncated 200.
- A larger answer cut off mid-body ends the client's connection without a clean end, so
  the client cannot take it for complete.  An event stream first gets one last event, an
  OpenAI-style error saying the upstream ended the stream early: streaming clients read
  events, and most would otherwise report a bare protocol error or nothing at all.

The header rules are written once over either spelling of header names: text (aiohttp
decodes headers) or raw bytes (the fast path never decodes them).  `TEXT` and `RAW` hold
the names each compares with, precomputed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import AnyStr, Generic

from llama_swap.runtime.core.error_body import error_payload
from llama_swap.runtime.core.errors import RouteError

HOP_BY_HOP_NAMES: tuple[str, ...] = (
    "connection", "proxy-connection", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
)
SMALL_BODY = 64 * 1024  # answers with a Content-Length up to this size are relayed whole
UPSTREAM_ABORTED = "upstream aborted mid-response (%s): closing the client connection"
CLOSED_BEFORE_ANSWERING = "the upstream closed the connection before answering"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
IDEMPOTENCY_KEYS = ("Idempotency-Key", "X-Idempotency-Key")


@dataclass(frozen=True, slots=True)
class Spelling(Generic[AnyStr]):
    """The names and separators the header rules compare with, in one encoding."""

    hop_by_hop: frozenset[AnyStr]
    hop_by_hop_and_length: frozenset[AnyStr]  # for a message whose body is framed anew
    connection: AnyStr
    x_forwarded_for: AnyStr  # lower case, for comparisons
    x_forwarded_for_name: AnyStr  # as written
    comma: AnyStr
    list_separator: AnyStr


TEXT: Spelling[str] = Spelling(
    frozenset(HOP_BY_HOP_NAMES), frozenset((*HOP_BY_HOP_NAMES, "content-length")),
    "connection", "x-forwarded-for", "X-Forwarded-For", ",", ", ",
)
RAW: Spelling[bytes] = Spelling(
    frozenset(n.encode() for n in TEXT.hop_by_hop),
    frozenset(n.encode() for n in TEXT.hop_by_hop_and_length),
    b"connection", b"x-forwarded-for", b"X-Forwarded-For", b",", b", ",
)


def dropped_names(
    headers: Collection[tuple[AnyStr, AnyStr]], base: frozenset[AnyStr], names: Spelling[AnyStr]
) -> frozenset[AnyStr]:
    """`base` plus the (lower-cased) names the message's `Connection` headers list; `base`
    itself, not a copy, in the common case of no Connection header."""
    listed = [value for name, value in headers if name.lower() == names.connection]
    if not listed:
        return base
    drop = set(base)
    for value in listed:
        for token in value.split(names.comma):
            token = token.strip()
            if token:
                drop.add(token.lower())
    return frozenset(drop)


def forwarded_request_headers(
    headers: Collection[tuple[AnyStr, AnyStr]], remote: AnyStr, names: Spelling[AnyStr]
) -> list[tuple[AnyStr, AnyStr]]:
    """The client's headers as the upstream gets them, in the client's order: hop-by-hop,
    Connection-listed and Content-Length dropped; `X-Forwarded-For` (earlier values, then
    `remote` when known) last.  Host is kept; whoever sends adds one when it is absent."""
    drop = dropped_names(headers, names.hop_by_hop_and_length, names)
    xff = names.x_forwarded_for
    out: list[tuple[AnyStr, AnyStr]] = []
    forwarded: list[AnyStr] = []
    for pair in headers:
        lname = pair[0].lower()
        if lname in drop:
            continue
        if lname == xff:
            forwarded.append(pair[1])
            continue
        out.append(pair)
    if remote:
        forwarded.append(remote)
    if forwarded:
        out.append((names.x_forwarded_for_name, names.list_separator.join(forwarded)))
    return out


def idempotent(method: str, has_idempotency_key: bool) -> bool:
    """Whether running a request twice does no more than running it once: the safe methods,
    or any request the client marked with an idempotency key."""
    return method in IDEMPOTENT_METHODS or has_idempotency_key


def retry_on_fresh_connection(
    *, first_attempt: bool, reused: bool, received_anything: bool, request_written: bool,
    idempotent: bool, body_replayable: bool,
) -> bool:
    """Whether a failed upstream attempt is tried again on a fresh connection.

    Only the first attempt, only on a reused (pooled) connection -- a fresh one failing is
    a real failure -- and only when the upstream sent nothing at all.  Then: a request of
    which nothing was written cannot have been processed, so it is sent again; one that
    was written may have been read and worked on before the upstream closed (a model
    killed mid-request looks exactly like this), so only an idempotent request is sent
    again.  Either way its body must be available again."""
    if not (first_attempt and reused and body_replayable) or received_anything:
        return False
    return not request_written or idempotent


def upstream_error(model_id: str, detail: object) -> RouteError:
    """The 502 for an upstream that could not be reached or failed before answering."""
    return RouteError(502, f"[{model_id}] upstream error: {detail}")


def no_headers_within(seconds: float) -> str:
    """Why an exchange failed when the upstream's head did not arrive in time."""
    return f"no response headers within {seconds:g}s"


def stream_ended_early(model_id: str, detail: object) -> bytes:
    """The last event of an event stream whose upstream died mid-answer.  It starts with a
    blank line, which ends an event the upstream left unfinished (an extra blank line
    between complete events is ignored by event-stream readers)."""
    error = upstream_error(model_id, f"the stream ended early: {detail}")
    return b"\n\ndata: " + error_payload(error) + b"\n\n"


def reusable_after_answer(*, keep_alive: bool, chunked: bool) -> bool:
    """Whether the connection that carried an answer may take another request: the
    upstream keeps it alive, and the answer was not chunked (see the module notes)."""
    return keep_alive and not chunked


def model_stopping(event: Mapping[str, object]) -> str | None:
    """The model whose idle upstream connections must close now, if `event` (a router
    event) says one started stopping.

    Why: a server waits for its open connections before it exits on SIGTERM (llama-server
    takes ~110 ms with one idle keep-alive connection open, ~2 ms without), and a swap
    waits for that exit before the next model starts.  State events are delivered before
    the stop signal is sent, so closing the pooled connections here takes that wait out
    of every swap."""
    if event.get("type") == "state" and event.get("new") == "stopping":
        model = event.get("model")
        return model if isinstance(model, str) else None
    return None
