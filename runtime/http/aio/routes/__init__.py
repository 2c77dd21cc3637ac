"""Route modules: each has `register(app)` and reads `app[runtime.app.STATE]`.

`admin` (health, running, unload) and `inference` (the model-dispatched JSON
routes) cover issue 3; issue 4's surface is added as further modules listed in
`runtime.app.ROUTE_MODULES`.
"""
