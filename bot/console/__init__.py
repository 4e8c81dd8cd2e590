"""The operator's web console: overview, history, models and opt-outs, on loopback.

Server-rendered (Starlette + Jinja2, htmx as one static file) so there is no JavaScript build
and nothing is fetched from a CDN. Every action calls the function the CLI calls: the console
adds no second path to Redis. This package is the only place that imports starlette, uvicorn
or jinja2, and nothing imports it at module level: the daemon and the CLI load it when they
serve the console (`bot.console.server.ConsoleServer`).
"""
