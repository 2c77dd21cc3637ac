"""The HTTP surface's building blocks: middlewares, handler factories and pure helpers.

Each module owns one concern of the reference's section 5 (errors, auth, CORS,
model extraction, filters, /v1/models, loading state, access log, events and
logs, peers).  Route modules in `runtime/routes/` compose them.
"""
