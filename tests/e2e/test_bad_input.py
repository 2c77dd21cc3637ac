"""Bad input, generated: whatever a client sends, llama-swap answers it with a clear 4xx
and stays healthy, on both front doors.

Two `llama-swap` processes serve the same plan (one model behind the fake upstream,
API keys on, `maxRequestBody` set to 64 KiB): one with the fast path, one with
`--no-fast-path`.  They live for the whole module, so hypothesis's examples reuse them.
Every example is sent, byte for byte, to both over a raw socket (tests/e2e/raw_http.py),
and each answer must be:

- complete and in time (never a connection dropped without an answer, never a hang);
- a status from the category's list below -- never a 5xx;
- llama-swap's own error body (JSON with `"src": "llama-swap"`) where a route decides,
  aiohttp's plain-text 400 where its parser refuses the request;
- the same status on both front doors;
- followed, when the connection stays open, by a working `GET /health` on the same
  connection (an answer that sends more or fewer bytes than it announces would break it).

| category | statuses |
|---|---|
| malformed JSON body | 404 no model (Go's gjson finds none); 400 nested too deeply |
| a JSON body that is not an object | 404 no model |
| a missing, empty or non-string `model` | 404 (no model; or no local server for its JSON text) |
| many and long headers | 200 within aiohttp's limits (1000 headers, 1 MiB per field, 64 KiB target); 400 beyond; a 400 from the model server passed on (it takes less) |
| a body over `maxRequestBody` | 413 (by length from the head, or once a chunked body crosses it); 401 first without a key; 405 first on a route that takes no POST (`/health`) |
| a wrong content type | 404 no model |
| dot segments in `/upstream/`, `/ui/`, `/logs/stream/` (plain, `%2e%2e`, encoded slashes) | 400; for a method the route does not take, the mux's 301 to the clean path (raw `..`) or 405; never reaches the model server |
| invalid UTF-8 | path and query: aiohttp's 400; a key header: 401; another header: as if valid; body: 200 passed through as it is, or 404 for the model name |
| slow heads, abandoned requests | a slow request is answered normally; an abandoned one costs nothing |
| garbage request lines | aiohttp's 400, or the connection closed; never a 5xx |

After the run each proxy answers `/health` and a normal request, logged no crash, and
its memory stayed bounded.  Hypothesis is derandomized (the same examples every run)
and bounded (`EXAMPLES`), so the module takes well under a minute.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.plan import plan_to_json
from llama_swap.runtime.http.middleware.mux import clean_path
from tests.e2e.conftest import LLAMA_SWAP, Proxy, fake_model, launch, make_plan
from tests.e2e.raw_http import Answer, Conn, NoAnswer, chunked, request

KEY = "sk-bad-input"
AUTH = f"Authorization: Bearer {KEY}"
LIMIT = 64 * 1024
JSON_CT = "Content-Type: application/json"
CHAT = "/v1/chat/completions"
MIB = 1 << 20
# examples per category (about 1-3 ms per exchange, the large ones ~20 ms); more with
# BAD_INPUT_EXAMPLES=N, e.g. to see that memory levels off
EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CRASH_MARKERS = ("Traceback", "Fatal error", "Unhandled exception", "unexpected error")


def crashed(line: str) -> bool:
    """A log line that says the proxy failed, not the client.  aiohttp reports a body it
    could not decode once more as it discards the rest, after the 400 went out."""
    return any(m in line for m in CRASH_MARKERS) and "RequestPayloadError" not in line


class Door:
    """One running llama-swap and what the run learned about it."""

    def __init__(self, name: str, proxy: Proxy) -> None:
        self.name = name
        self.proxy = proxy
        self.url = proxy.url
        self.rss_start = 0
        self.exchanges = 0


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Door]]:
    """The fast path and the aiohttp front door, on equal plans, warmed up (model loaded)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    started: list[Proxy] = []
    out: list[Door] = []
    try:
        for name, extra in (("fast", ()), ("aiohttp", ("--no-fast-path",))):
            record = tmp / f"served-{name}.jsonl"
            plan = make_plan([fake_model("a", record)])
            plan = replace(plan, settings=replace(
                plan.settings, apiKeys=(KEY,), maxRequestBody=LIMIT, logLevel="info"
            ))
            path = tmp / f"plan-{name}.json"
            path.write_text(plan_to_json(plan))
            argv = [LLAMA_SWAP, "--plan", str(path), "--listen", "127.0.0.1:0", *extra]
            door = Door(name, launch(argv, record, started))
            assert normal_request(door).status == 200  # loads the model once
            door.rss_start = psutil.Process(door.proxy.proc.pid).memory_info().rss
            out.append(door)
        yield out
    finally:
        for p in started:
            p.stop()


def normal_request(door: Door) -> Answer:
    body = json.dumps({"model": "a", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with Conn(door.url) as conn:
        conn.send(request("POST", CHAT, JSON_CT, AUTH, body=body, close=True))
        return conn.read_answer()


def exchange(door: Door, data: bytes, *, then_health: bool = True) -> Answer:
    """Send `data` on a fresh connection and read the answer; when the connection stays
    open, a `GET /health` on it must then be answered 200 (the framing held)."""
    door.exchanges += 1
    with Conn(door.url) as conn:
        conn.send(data)
        try:
            answer = conn.read_answer()
        except NoAnswer as exc:
            raise AssertionError(f"{door.name}: no answer to {data[:300]!r}: {exc}") from None
        if then_health and not answer.closes:
            conn.send(request("GET", "/health"))
            try:
                health = conn.read_answer()
            except NoAnswer as exc:
                raise AssertionError(
                    f"{door.name}: the connection broke after a {answer.status} "
                    f"to {data[:300]!r}: {exc}"
                ) from None
            assert (health.status, health.body) == (200, b"OK"), (door.name, data[:300])
        return answer


def on_both(doors: list[Door], data: bytes, allowed: set[int], **kw: Any) -> int:
    """`data` to both front doors: each answer's status is in `allowed`, never a 5xx, and
    the same on both; returns it."""
    answers = [exchange(door, data, **kw) for door in doors]
    statuses = [a.status for a in answers]
    for door, answer in zip(doors, answers, strict=True):
        assert answer.status < 500, (door.name, answer.status, answer.body[:300], data[:300])
        assert answer.status in allowed, (door.name, answer.status, answer.body[:300], data[:300])
    assert statuses[0] == statuses[1], (statuses, [a.body[:200] for a in answers], data[:300])
    return statuses[0]


def own_error(answer: Answer, status: int) -> str:
    """llama-swap's own JSON error: its message."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.header("content-type") == "application/json", answer.headers
    doc = json.loads(answer.body)
    assert doc["src"] == "llama-swap"
    return str(doc["error"]["message"])


def on_both_own_error(doors: list[Door], data: bytes, status: int) -> list[str]:
    """`data` to both doors: each answers `status` with llama-swap's error body."""
    return [own_error(exchange(door, data), status) for door in doors]


def post(path: str, body: bytes, *headers: str | bytes, key: bool = True) -> bytes:
    return request("POST", path, *headers, *((AUTH,) if key else ()), body=body)


# --- bodies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
valid_request = st.fixed_dictionaries(
    {"model": st.just("a"), "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=30)}), max_size=3)}
).map(lambda d: json.dumps(d).encode())


@FUZZ
@given(data=st.data())
def test_a_malformed_json_body_is_a_404_no_model(doors: list[Door], data: st.DataObject) -> None:
    whole = data.draw(valid_request)
    body = data.draw(st.one_of(
        st.integers(1, len(whole) - 1).map(lambda n: whole[:n]),  # cut short
        st.binary(max_size=300).filter(lambda b: not _parses(b)),  # noise
        st.just(b"{" * 50_000), st.just(b"{\"model\": \"a\",,}"), st.just(b"\x00\x01"),
    ))
    status = on_both(doors, post(CHAT, body, JSON_CT), {400, 404})
    assert status == 404 or body.count(b"{") + body.count(b"[") > 900


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


@FUZZ
@given(value=json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_json_body_that_is_not_an_object_names_no_model(doors: list[Door], value: Any) -> None:
    errors = on_both_own_error(doors, post(CHAT, json.dumps(value).encode(), JSON_CT), 404)
    assert errors == ["no model id could be identified"] * 2


@FUZZ
@given(model=st.one_of(
    st.just(None), st.just(""), st.integers(), st.floats(allow_nan=False), st.booleans(),
    st.lists(st.just("a"), max_size=2), st.dictionaries(st.just("id"), st.just("a")),
    st.text(max_size=40).filter(lambda t: t not in ("a", "")), st.just("\ud800"), st.just("a\x00"),
), missing=st.booleans())
def test_a_missing_empty_or_non_string_model_is_a_404(
    doors: list[Door], model: Any, missing: bool
) -> None:
    doc: dict[str, Any] = {"messages": []} if missing else {"model": model, "messages": []}
    errors = on_both_own_error(doors, post(CHAT, json.dumps(doc).encode(), JSON_CT), 404)
    assert errors[0] == errors[1]
    if missing or model in (None, ""):
        assert errors[0] == "no model id could be identified"
    else:
        assert errors[0].startswith("no local server found for requested model")


# --- heads ---------------------------------------------------------------------------


@FUZZ
@given(
    count=st.integers(0, 1400), size=st.integers(1, 300),
    long_value=st.sampled_from([0, 60_000, 900_000, 1_100_000]),
    long_target=st.sampled_from([0, 60_000, 70_000]),
    path=st.sampled_from(["/health", CHAT]),
)
def test_many_and_long_headers_are_served_within_the_limits_and_a_400_beyond(
    doors: list[Door], count: int, size: int, long_value: int, long_target: int, path: str
) -> None:
    headers = [b"X-Filler-%d: %s" % (i, b"v" * size) for i in range(count)]
    if long_value:
        headers.append(b"X-Long: " + b"L" * long_value)
    target = path + ("?q=" + "t" * long_target if long_target else "")
    body = json.dumps({"model": "a", "messages": []}).encode() if path == CHAT else b""
    method = "POST" if body else "GET"
    data = request(method, target, *headers, JSON_CT, AUTH, body=body)
    beyond = count + 4 > 1000 or long_value > MIB or long_target > 65000
    # the model server (the fake runs aiohttp's defaults) refuses what it cannot take
    upstream_refuses = path == CHAT and (count + 6 > 128 or max(size, long_value, long_target) > 8190)
    status = on_both(doors, data, {200, 400})
    assert status == (400 if beyond or upstream_refuses else 200), (count, long_value, long_target)


@FUZZ
@given(
    size=st.integers(LIMIT + 1, 4 * LIMIT),
    path=st.sampled_from([CHAT, "/v1/audio/transcriptions", "/upstream/a/v1/echo", "/health"]),
    framing=st.sampled_from(["length", "chunked"]),
    key=st.booleans(),
)
def test_a_body_over_the_limit_is_a_413_unless_refused_first(
    doors: list[Door], size: int, path: str, framing: str, key: bool
) -> None:
    ctype = ("Content-Type: multipart/form-data; boundary=b" if "audio" in path else JSON_CT)
    first = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
             if "audio" in path else b'{"model": "a", "x": "')
    body = (first + b"0" * size)[:size]
    head = [ctype, *((AUTH,) if key else ())]
    if framing == "length":
        data = request("POST", path, *head, body=body)
    else:
        data = request("POST", path, *head, "Transfer-Encoding: chunked", body=chunked(body), length=False)
    if path == "/health":
        expected = 405  # the mux answers first: /health takes GET only
    elif not key:
        expected = 401
    else:
        expected = 413
    status = on_both(doors, data, {401, 405, 413})
    assert status == expected
    if expected == 413:
        assert "maxRequestBody" in own_error(exchange(doors[0], data), 413)


BROKEN_TYPES = [
    "Content-Type: text/plain",
    "Content-Type: application/x-www-form-urlencoded",
    "Content-Type: multipart/form-data; boundary=",
    "Content-Type: multipart/form-data",
    'Content-Type: multipart/form-data; boundary="unterminated',
    "Content-Type: multipart/form-data; boundary=zz",
    "Content-Type: application/xml",
    "Content-Type: ",
    "",
]


@FUZZ
@given(
    ctype=st.sampled_from(BROKEN_TYPES),
    body=st.one_of(
        st.just(b'{"model": "a"}'), st.binary(max_size=200),
        st.just(b'--zz\r\nContent-Disposition: form-data; name="mod'),
        st.just(b"--zz\r\n\r\n\r\n--zz--"), st.just(b"model=&stream=true"),
    ).filter(lambda b: b"model=a" not in b),
    path=st.sampled_from([CHAT, "/v1/audio/transcriptions", "/v1/embeddings"]),
)
def test_a_wrong_content_type_names_no_model(
    doors: list[Door], ctype: str, body: bytes, path: str
) -> None:
    data = post(path, body, *((ctype,) if ctype else ()))
    on_both_own_error(doors, data, 404)


# --- paths ---------------------------------------------------------------------------

DOTS = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "."]
SLASHES = ["/", "%2f", "%2F"]
TAILS = ["etc/passwd", "etc%2fpasswd", "", "a", "a/v1/models", "style.css", "%00", "proxy"]


@FUZZ
@given(
    prefix=st.sampled_from(["/upstream/", "/upstream/a/", "/ui/", "/logs/stream/"]),
    steps=st.lists(st.tuples(st.sampled_from(DOTS), st.sampled_from(SLASHES)), min_size=1, max_size=4),
    tail=st.sampled_from(TAILS),
    method=st.sampled_from(["GET", "POST"]),
)
def test_dot_segments_never_reach_a_model_or_a_file(
    doors: list[Door], prefix: str, steps: list[tuple[str, str]], tail: str, method: str
) -> None:
    target = prefix + "".join(dots + slash for dots, slash in steps) + tail
    before = [len(door.proxy.records()) for door in doors]
    answers = [exchange(door, request(method, target, AUTH, body=b"{}" if method == "POST" else b""))
               for door in doors]
    routed = method == "GET" or prefix.startswith("/upstream/")  # else the mux's 405
    for door, answer, seen in zip(doors, answers, before, strict=True):
        if routed:
            assert ".." in own_error(answer, 400), (door.name, target)
        else:  # the mux: a redirect to the clean path for a raw "..", else its 405
            assert answer.status in (301, 405), (door.name, target, answer.status)
            location = answer.header("location")
            assert location is None or clean_path(location) == location, target
        assert len(door.proxy.records()) == seen, f"{target} reached the model"
    assert answers[0].status == answers[1].status, target


# --- HEAD, upgrades, odd framing ----------------------------------------------------

HEAD_PATHS = ["/api/events", "/logs/stream", "/logs/stream/proxy", "/logs/stream/upstream",
              "/logs/stream/a", "/logs/stream/nope", "/logs", "/ui/", "/ui/models", "/ui/style.css",
              "/favicon.ico", "/metrics", "/v1/models", "/running", "/api/version",
              "/api/performance", "/api/metrics", "/api/captures/1", "/api/config/status",
              "/upstream/a/health", "/v1/models?model=a", "/health", "/nope"]


@FUZZ
@given(path=st.sampled_from(HEAD_PATHS), key=st.booleans())
def test_a_head_is_answered_with_headers_only_on_every_route(
    doors: list[Door], path: str, key: bool
) -> None:
    for door in doors:
        door.exchanges += 1
        with Conn(door.url, timeout=5) as conn:
            conn.send(request("HEAD", path, *((AUTH,) if key else ()))
                      + request("GET", "/health", close=True))
            head = conn.read_answer(head_only=True)
            assert head.status < 500, (door.name, path, head.status, door.proxy.log_text()[-2000:])
            if not head.closes:  # the next bytes must be the next answer, nothing else
                health = conn.read_answer()
                assert (health.status, health.body) == (200, b"OK"), (door.name, path, conn.buf[:200])


@FUZZ
@given(
    extra=st.lists(st.sampled_from([
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: bm90IGEga2V5", "Expect: 100-continue", "Expect: nonsense",
        "Transfer-Encoding: gzip", "Content-Encoding: gzip", "Content-Encoding: br",
        "Content-Encoding: nonsense", "Host: a", "Host: b",
        "Content-Type: application/json", "Connection: keep-alive, close",
    ]), max_size=5, unique=True),
    path=st.sampled_from([CHAT, "/upstream/a/ws", "/v1/models", "/health"]),
)
def test_odd_headers_and_framing_are_answered_never_with_a_5xx_of_our_own(
    doors: list[Door], extra: list[str], path: str
) -> None:
    body = json.dumps({"model": "a", "messages": []}).encode()
    data = request("POST" if path == CHAT else "GET", path, AUTH, *extra,
                   body=body if path == CHAT else b"")
    for door in doors:
        answer = exchange(door, data, then_health=False)
        # a websocket the model server does not speak is the model's 502, named as such
        if answer.status == 502:
            assert "websocket error" in own_error(answer, 502), (door.name, data)
        else:
            assert answer.status < 500, (door.name, answer.status, answer.body[:300], data)


# --- invalid UTF-8 -------------------------------------------------------------------

bad_utf8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc"])


@FUZZ
@given(where=st.sampled_from(["path", "query", "key", "x-api-key", "header", "user-agent",
                               "accept", "content-type", "model", "body"]),
       junk=bad_utf8, path=st.sampled_from([CHAT, "/v1/embeddings"]))
def test_invalid_utf8_is_refused_where_it_matters_and_passed_on_elsewhere(
    doors: list[Door], where: str, junk: bytes, path: str
) -> None:
    model = b"a" + junk if where == "model" else b"a"
    body = b'{"model": "' + model + b'", "input": "' + (junk if where == "body" else b"") + b'"}'
    target = path.encode() + (junk if where == "path" else b"") + (b"?q=" + junk if where == "query" else b"")
    headers: list[bytes] = [JSON_CT.encode() + (b"; x=" + junk if where == "content-type" else b"")]
    if where == "key":
        headers.append(b"Authorization: Bearer " + KEY.encode() + junk)
    elif where == "x-api-key":
        headers.append(b"x-api-key: " + junk)
    else:
        headers.append(AUTH.encode())
    if where in ("header", "user-agent", "accept"):
        name = {"header": b"X-Note", "user-agent": b"User-Agent", "accept": b"Accept"}[where]
        headers.append(name + b": " + junk)
    data = request("POST", target, *headers, body=body)
    expected = {"path": 400, "query": 400, "key": 401, "x-api-key": 401, "model": 404}.get(where, 200)
    assert on_both(doors, data, {200, 400, 401, 404}) == expected


# --- slow, abandoned, garbage --------------------------------------------------------


@settings(FUZZ, max_examples=12)
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=4),
       pause=st.floats(0.0, 0.03), abandon=st.booleans())
def test_a_slow_request_is_answered_and_an_abandoned_one_costs_nothing(
    doors: list[Door], cuts: list[int], pause: float, abandon: bool
) -> None:
    body = json.dumps({"model": "a", "messages": []}).encode()
    data = request("POST", CHAT, JSON_CT, AUTH, body=body, close=True)
    points = sorted({min(c, len(data) - 1) for c in cuts})
    for door in doors:
        with Conn(door.url) as conn:
            last = 0
            for point in points:
                conn.send(data[last:point])
                last = point
                time.sleep(pause)
            if abandon:
                continue  # closed with the request half sent
            conn.send(data[last:])
            assert conn.read_answer().status == 200
        assert normal_request(door).status == 200


@FUZZ
@given(line=st.one_of(
    st.binary(min_size=1, max_size=100).filter(lambda b: b"\r\n\r\n" not in b and b"\n\n" not in b),
    st.sampled_from([b"GET", b"GET /", b"GET / HTTP/9.9", b"POST / HTTP/1.1\r\nContent-Length: -1",
                     b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
                     b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, identity",
                     b"GET / HTTP/1.1\r\n Folded: header", b"\x16\x03\x01\x02\x00"]),
))
def test_a_garbage_request_is_never_a_5xx(doors: list[Door], line: bytes) -> None:
    data = line + b"\r\n\r\n"
    for door in doors:
        door.exchanges += 1
        with Conn(door.url) as conn:
            conn.send(data)
            try:
                answer = conn.read_answer()
            except NoAnswer:
                continue  # closing without an answer is a fair reply to noise
            # mostly aiohttp's 400; a bare "GET /" is a valid HTTP/0.9 request (302 to /ui)
            assert answer.status < 500, (door.name, answer.status, data[:200])


# --- and after all that --------------------------------------------------------------


def test_after_the_run_each_proxy_is_healthy_small_and_logged_no_crash(
    doors: list[Door], record_property: Callable[[str, object], None]
) -> None:
    for door in doors:
        with Conn(door.url) as conn:
            conn.send(request("GET", "/health", close=True))
            assert conn.read_answer().status == 200
        assert normal_request(door).status == 200
        rss = psutil.Process(door.proxy.proc.pid).memory_info().rss
        growth = (rss - door.rss_start) / MIB
        record_property(f"{door.name}_rss_mb", round(rss / MIB, 1))
        record_property(f"{door.name}_exchanges", door.exchanges)
        print(f"\n{door.name}: {door.exchanges} bad requests, RSS {door.rss_start / MIB:.1f} -> "
              f"{rss / MIB:.1f} MB")
        assert growth < 64, f"{door.name} grew by {growth:.0f} MB"
        crashes = [line for line in door.proxy.log_text().splitlines() if crashed(line)]
        assert crashes == [], crashes[:20]

