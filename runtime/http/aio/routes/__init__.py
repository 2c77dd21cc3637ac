"""Route modules of the aiohttp front door: each has `register(app, services)` and is
listed in `aio.app.ROUTE_MODULES`.  They never import each other; what they share lives
in the services object (runtime/http/services.py) and in non-route modules."""
