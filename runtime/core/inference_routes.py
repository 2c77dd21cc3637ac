"""The model-dispatched routes: which paths name a model, and how their paths go upstream.

A route table, not handlers: the aiohttp front door registers these paths, the fast path
recognises the JSON ones in a request head, and the activity log meters their exchanges
(on `/upstream/<model><path>` too).  The versionless `/v/...` spellings are forwarded
without their `/v` prefix, audio.cpp's `/audioapi/...` without `/audioapi`.
"""

from __future__ import annotations

JSON_ROUTES: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/reranking",
    "/rerank",
    "/v1/rerank",
    "/v1/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/images/generations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/audioapi/v1/tasks/run",  # audio.cpp's task API: goes upstream as /v1/tasks/run
)
VERSIONLESS_ROUTES: tuple[str, ...] = (
    "/v/chat/completions",
    "/v/responses",
    "/v/completions",
    "/v/messages",
    "/v/messages/count_tokens",
    "/v/embeddings",
    "/v/rerank",
    "/v/reranking",
)
MULTIPART_ROUTES: tuple[str, ...] = ("/v1/audio/transcriptions", "/v1/images/edits")
# GET routes name their model in `?model=`; `/props` is llama-server's (its query goes upstream).
GET_ROUTES: tuple[str, ...] = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")
# POST paths whose exchanges are recorded (also as `/upstream/<model><path>`).
METERED_PATHS: frozenset[str] = frozenset((*JSON_ROUTES, *VERSIONLESS_ROUTES, *MULTIPART_ROUTES))
# The POST routes whose body is JSON: the only ones a request head alone can route.
JSON_BODY_PATHS: frozenset[str] = frozenset((*JSON_ROUTES, *VERSIONLESS_ROUTES))


def is_model_dispatched(method: str, path: str) -> bool:
    """Whether `method path` is one of the model-dispatched routes (a POST route or a GET
    one): an `/upstream/<model><path>` request for it is listed in flight like the route."""
    if method == "POST":
        return path in METERED_PATHS
    return method == "GET" and path in GET_ROUTES


def forward_path(path: str) -> str:
    """`/v/chat/completions` -> `/chat/completions`, `/audioapi/v1/tasks/run` ->
    `/v1/tasks/run`; other paths unchanged."""
    if path.startswith("/v/"):
        return path[2:]
    return path[9:] if path.startswith("/audioapi/") else path
