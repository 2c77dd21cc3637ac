"""The request policy both front doors share (runtime/core: admission, forwarding, auth,
error bodies), read as a specification.  Pure: no sockets, no clocks."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from llama_swap.compiler.plan import Model, Peer, Plan, Settings
from llama_swap.runtime.core.admission import Admit, admit
from llama_swap.runtime.core.auth import (
    UNAUTHORIZED,
    extract_api_key,
    is_exempt,
    key_matches,
    rejects,
    unauthorized,
)
from llama_swap.runtime.core.error_body import (
    ErrorAnswer,
    envelope,
    error_answer,
    error_kind,
    error_payload,
    route_error_answer,
    well_formed,
)
from llama_swap.runtime.core.errors import RouteError, too_many_requests
from llama_swap.runtime.core.forwarding import (
    RAW,
    TEXT,
    dropped_names,
    forwarded_request_headers,
    idempotent,
    retry_on_fresh_connection,
    reusable_after_answer,
    stream_ended_early,
    upstream_error,
)
from llama_swap.runtime.core.inference_routes import forward_path
from llama_swap.runtime.core.limits import (
    body_too_large,
    dot_segments_error,
    exceeds,
    has_dot_segments,
    parse_id,
    too_deeply_nested,
)
from llama_swap.runtime.core.process_state import ProcessState


def model(mid: str, **kw: object) -> Model:
    return Model(id=mid, cmd=("x",), cmdStop=None, proxy="http://127.0.0.1:1",
                 checkEndpoint="/health", ttl=0, **kw)  # type: ignore[arg-type]


def plan(*models: Model, peers: tuple[Peer, ...] = ()) -> Plan:
    return Plan(settings=Settings(), models=MappingProxyType({m.id: m for m in models}),
                aliases=MappingProxyType({}), peers=MappingProxyType({p.id: p for p in peers}))


@dataclass
class Proc:
    state: ProcessState


READY = Proc(ProcessState.READY)
STOPPED = Proc(ProcessState.STOPPED)
PEER = Peer(id="p", proxy="http://127.0.0.1:2", models=("remote", "gone"))


# --- admission ------------------------------------------------------------------------

def test_a_local_model_with_a_process_is_served_locally() -> None:
    assert admit(plan(model("m")), {"m": STOPPED}, "m", "/v1/chat/completions", True) is Admit.LOCAL


def test_a_model_a_reload_removed_is_unknown_while_its_process_drains() -> None:
    assert admit(plan(), {"gone": READY}, "gone", "/v1/completions", False) is Admit.UNKNOWN


def test_a_removed_model_a_peer_lists_goes_to_the_peer() -> None:
    assert admit(plan(peers=(PEER,)), {"gone": READY}, "gone", "/v1/completions", False) is Admit.PEER


def test_a_planned_model_without_a_process_is_not_local() -> None:
    assert admit(plan(model("m")), {}, "m", "/v1/completions", False) is Admit.UNKNOWN


def test_local_wins_over_a_peer_listing_the_same_name() -> None:
    p = plan(model("remote"), peers=(PEER,))
    assert admit(p, {"remote": READY}, "remote", "/v1/completions", False) is Admit.LOCAL


def test_no_model_named() -> None:
    assert admit(plan(), {}, "", "/v1/completions", False) is Admit.NO_MODEL


@pytest.mark.parametrize(
    ("path", "streaming", "proc", "expected"),
    [
        ("/v1/chat/completions", True, STOPPED, Admit.LOADING),
        ("/v1/chat/completions", True, READY, Admit.LOCAL),  # nothing to wait for
        ("/v1/chat/completions", False, STOPPED, Admit.LOCAL),  # not a stream
        ("/v1/completions", True, STOPPED, Admit.LOCAL),  # not a chat
    ],
)
def test_loading_state_only_for_a_streaming_chat_to_a_model_not_ready(
    path: str, streaming: bool, proc: Proc, expected: Admit
) -> None:
    p = plan(model("m", sendLoadingState=True))
    assert admit(p, {"m": proc}, "m", path, streaming) is expected
    assert admit(plan(model("m")), {"m": proc}, "m", path, streaming) is Admit.LOCAL


def test_every_outcome_says_why() -> None:
    assert all(outcome.reason for outcome in Admit)


# --- forwarding -----------------------------------------------------------------------

def test_request_headers_drop_hop_by_hop_and_append_the_client_to_x_forwarded_for() -> None:
    headers = [("Host", "proxy"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
               ("X-Forwarded-For", "10.0.0.1"), ("Content-Length", "2"), ("TE", "trailers"),
               ("Accept", "*/*"), ("x-forwarded-for", "10.0.0.2")]
    assert forwarded_request_headers(headers, "127.0.0.1", TEXT) == [
        ("Host", "proxy"), ("Accept", "*/*"),
        ("X-Forwarded-For", "10.0.0.1, 10.0.0.2, 127.0.0.1"),
    ]


def test_the_same_rule_over_raw_bytes() -> None:
    headers = [(b"Host", b"proxy"), (b"connection", b"close"), (b"Keep-Alive", b"5"),
               (b"Content-Type", b"application/json")]
    assert forwarded_request_headers(headers, b"::1", RAW) == [
        (b"Host", b"proxy"), (b"Content-Type", b"application/json"), (b"X-Forwarded-For", b"::1"),
    ]


def test_without_a_client_address_earlier_values_still_travel() -> None:
    assert forwarded_request_headers([("X-Forwarded-For", "a")], "", TEXT) == [
        ("X-Forwarded-For", "a")
    ]
    assert forwarded_request_headers([("Accept", "x")], "", TEXT) == [("Accept", "x")]


def test_dropped_names_are_the_base_set_itself_without_a_connection_header() -> None:
    assert dropped_names([("Accept", "x")], TEXT.hop_by_hop, TEXT) is TEXT.hop_by_hop
    assert "x-a" in dropped_names([("Connection", " X-A ,, ")], TEXT.hop_by_hop, TEXT)
    assert "content-length" not in TEXT.hop_by_hop and b"content-length" in RAW.hop_by_hop_and_length


def retry(**kw: bool) -> bool:
    base = {"first_attempt": True, "reused": True, "received_anything": False,
            "request_written": False, "idempotent": False, "body_replayable": True}
    return retry_on_fresh_connection(**{**base, **kw})


def test_a_request_nothing_of_which_was_written_is_retried_once_on_a_fresh_connection() -> None:
    assert retry()
    assert not retry(first_attempt=False)
    assert not retry(reused=False)  # a fresh connection failing is a real failure
    assert not retry(received_anything=True)  # the upstream answered something
    assert not retry(body_replayable=False)  # part of a streamed body already went


def test_a_written_post_is_never_sent_twice_but_an_idempotent_request_is() -> None:
    # the upstream read the request and closed without answering: it may have run it
    assert not retry(request_written=True)
    assert retry(request_written=True, idempotent=True)
    assert not retry(request_written=True, idempotent=True, received_anything=True)
    assert not retry(request_written=True, idempotent=True, body_replayable=False)


def test_idempotent_requests_are_the_safe_methods_or_those_with_an_idempotency_key() -> None:
    assert all(idempotent(m, False) for m in ("GET", "HEAD", "OPTIONS", "TRACE"))
    assert not any(idempotent(m, False) for m in ("POST", "PUT", "PATCH", "DELETE"))
    assert idempotent("POST", True)


# --- limits ---------------------------------------------------------------------------

def test_a_body_is_too_large_only_over_a_set_limit_and_when_its_size_is_known() -> None:
    assert exceeds(11, 10) and not exceeds(10, 10)
    assert not exceeds(1 << 60, 0)  # 0: no limit
    assert not exceeds(None, 10)  # chunked: decided as the bytes cross the limit


def test_the_limit_errors_are_a_413_and_a_400_rendered_like_every_error() -> None:
    error = body_too_large(1024)
    assert error.status == 413 and "1024 bytes" in error.message
    assert "maxRequestBody" in error.message
    answer = route_error_answer("", error)
    assert answer.status == 413 and answer.content_type == "application/json"
    assert json.loads(answer.body)["src"] == "llama-swap"
    assert too_deeply_nested() == RouteError(400, "invalid JSON body: nested too deeply")


def test_an_id_is_parsed_only_when_it_can_name_something() -> None:
    assert parse_id("42") == 42 and parse_id("+7") == 7 and parse_id("-1") == -1
    assert parse_id("9" * 18) == int("9" * 18)
    assert parse_id("9" * 19) is None  # too long to be an id (and int() stays cheap)
    assert parse_id("1" * 100_000) is None  # beyond Python's int() digit limit
    assert parse_id("") is None and parse_id("x1") is None and parse_id("\u0661") is None
    assert parse_id("١") is None  # a non-ASCII digit


def test_upstream_errors_name_the_model() -> None:
    assert upstream_error("m", "refused") == RouteError(502, "[m] upstream error: refused")


def test_versionless_paths_lose_their_prefix() -> None:
    assert forward_path("/v/chat/completions") == "/chat/completions"
    assert forward_path("/v1/chat/completions") == "/v1/chat/completions"


# --- auth -----------------------------------------------------------------------------

def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_candidate_key_prefers_basic_then_bearer_then_x_api_key() -> None:
    assert extract_api_key({"Authorization": basic("u", "b"), "x-api-key": "x"}) == "b"
    assert extract_api_key({"Authorization": "bearer t", "x-api-key": "x"}) == "t"
    assert extract_api_key({"Authorization": "Basic !!", "x-api-key": "x"}) == "x"
    assert extract_api_key({}) == ""


def test_keys_match_exactly_and_never_empty() -> None:
    assert key_matches("k2", ["k1", "k2"])
    assert not key_matches("k", ["k1"]) and not key_matches("", [""])


def test_open_routes() -> None:
    assert is_exempt("OPTIONS", "/v1/chat/completions") and is_exempt("POST", "/health")
    assert is_exempt("GET", "/ui") and not is_exempt("POST", "/ui")


def test_a_request_is_rejected_only_when_keys_are_set_the_route_is_closed_and_no_key_fits() -> None:
    assert not rejects((), "POST", "/v1/completions", {})
    assert rejects(("k",), "POST", "/v1/completions", {"x-api-key": "nope"})
    assert not rejects(("k",), "POST", "/v1/completions", {"x-api-key": "k"})
    assert not rejects(("k",), "GET", "/health", {})


def test_the_401_challenges_for_basic_credentials() -> None:
    answer = unauthorized("")
    assert answer.status == 401 and UNAUTHORIZED.encode() in answer.body
    assert answer.headers == (("WWW-Authenticate", 'Basic realm="llama-swap"'),
                              ("Content-Type", "application/json"))


# --- error bodies ---------------------------------------------------------------------

def openai_error(message: str, kind: str, code: str) -> dict[str, object]:
    """The body an OpenAI client expects, with `src` saying the proxy wrote it."""
    return {"src": "llama-swap",
            "error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(("status", "kind", "code"), [
    (400, "invalid_request_error", "bad_request"),
    (401, "authentication_error", "unauthorized"),
    (403, "authentication_error", "forbidden"),
    (404, "invalid_request_error", "not_found"),
    (409, "invalid_request_error", "conflict"),
    (413, "invalid_request_error", "request_too_large"),
    (429, "rate_limit_error", "rate_limit_exceeded"),
    (418, "invalid_request_error", "invalid_request"),  # any other 4xx: the client's fault
    (500, "server_error", "internal_error"),
    (502, "server_error", "bad_gateway"),
    (503, "server_error", "service_unavailable"),
    (504, "server_error", "gateway_timeout"),
    (507, "server_error", "internal_error"),  # any other status: the server's
])
def test_an_error_body_is_the_openai_error_object_typed_by_status(
    status: int, kind: str, code: str
) -> None:
    assert error_kind(status) == (kind, code)
    answer = error_answer("", status, "went wrong")
    assert answer.status == status and answer.content_type == "application/json"
    assert json.loads(answer.body) == openai_error("went wrong", kind, code)


def test_the_envelope_is_compact_in_openai_key_order_with_markup_escaped() -> None:
    assert error_answer("", 404, "<b> & c").body == (
        b'{"src":"llama-swap","error":{"message":"\\u003cb\\u003e \\u0026 c",'
        b'"type":"invalid_request_error","param":null,"code":"not_found"}}'
    )
    assert envelope(500, "x", code="custom").endswith(b'"code":"custom"}}')


def test_error_answers_follow_accept() -> None:
    assert error_answer("text/plain", 404, "x") == ErrorAnswer(
        404, (("Content-Type", "text/plain"),), b"llama-swap: x")
    html = error_answer("text/html", 503, "<b>")
    assert html.content_type == "text/html" and b"&lt;b&gt;" in html.body
    assert error_answer("application/json", 503, "x").content_type == "application/json"


def test_the_concurrency_limit_answers_json_whatever_is_accepted_and_says_when_to_retry() -> None:
    for accept in ("", "text/plain", "text/html"):
        answer = route_error_answer(accept, too_many_requests())
        assert answer.status == 429 and ("Retry-After", "1") in answer.headers
        assert answer.content_type == "application/json"
        assert json.loads(answer.body) == openai_error(
            "Too many requests", "rate_limit_error", "concurrency_limit")
    answer = route_error_answer("", RouteError(503, "busy", retry_after=3))
    assert answer.headers[0] == ("Retry-After", "3") and answer.content_type == "application/json"


def test_an_error_inside_a_started_stream_is_the_same_envelope() -> None:
    assert json.loads(error_payload(RouteError(502, "[m] start failed: x"))) == openai_error(
        "[m] start failed: x", "server_error", "bad_gateway")
    assert error_payload(too_many_requests()) == route_error_answer("", too_many_requests()).body


def test_a_stream_cut_short_ends_with_an_error_event_naming_the_model() -> None:
    event = stream_ended_early("qwen", "the upstream closed the connection mid-response")
    assert event.startswith(b"\n\ndata: ") and event.endswith(b"\n\n")
    body = json.loads(event.strip().removeprefix(b"data: "))
    assert body == openai_error(
        "[qwen] upstream error: the stream ended early: "
        "the upstream closed the connection mid-response", "server_error", "bad_gateway")


def test_a_key_that_is_not_valid_text_matches_nothing_and_raises_nothing() -> None:
    # undecodable header bytes arrive as lone surrogates (both front doors decode that way)
    for given in ("sk\udcff", "\ud800", "sk-\udcc3\udca9"):
        assert not key_matches(given, ["sk", "sk-é"])
        assert rejects(["sk"], "POST", "/v1/chat/completions", {"Authorization": f"Bearer {given}"})


def test_a_path_with_dot_segments_is_refused_however_it_is_encoded() -> None:
    for path in ("/upstream/a/../etc", "/upstream/a/%2e%2e/etc", "/upstream/a/..%2fetc",
                 "/ui/%2E%2E%2Fx.css", "/logs/stream/.%2e", "/upstream/a/./x", "/ui/."):
        assert has_dot_segments(path), path
    for path in ("/upstream/a/v1/models", "/ui/style.css", "/upstream/a/..x/y.", "/v1/x..y",
                 "/upstream/a/%2e%2ex", "/ui/", "/"):
        assert not has_dot_segments(path), path
    error = dot_segments_error()
    assert error.status == 400 and ".." in error.message



def test_text_a_client_sent_that_cannot_be_encoded_is_made_well_formed() -> None:
    # "\ud800" in JSON decodes to a lone surrogate, which no page, log or metric can encode
    assert well_formed("\ud800") == "\ufffd"
    assert well_formed("a\udcff b") == "a\ufffd b"
    same = "plain é"
    assert well_formed(same) is same


def test_a_connection_that_carried_a_chunked_answer_takes_no_other_request() -> None:
    assert reusable_after_answer(keep_alive=True, chunked=False)
    assert not reusable_after_answer(keep_alive=True, chunked=True)  # llama-server closes it
    assert not reusable_after_answer(keep_alive=False, chunked=False)


def test_a_model_starting_to_stop_is_the_one_whose_idle_connections_close() -> None:
    from llama_swap.runtime.core.forwarding import model_stopping

    assert model_stopping({"type": "state", "model": "a", "old": "ready", "new": "stopping"}) == "a"
    for event in (
        {"type": "state", "model": "a", "old": "stopping", "new": "stopped"},
        {"type": "state", "model": "a", "old": "stopped", "new": "starting"},
        {"type": "evict", "model": "a", "reason": "swap"},
        {"type": "state", "new": "stopping"},
    ):
        assert model_stopping(event) is None
