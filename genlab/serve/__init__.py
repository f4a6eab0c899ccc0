"""Serving a run's model over HTTP (``genlab serve``) and load-testing it (``genlab loadtest``).

``sampler`` loads what is served, ``batching`` merges concurrent requests into one model call,
``app`` is the HTTP server (its docstring documents the endpoints and the request log), and
``loadtest`` drives a server with open-loop Poisson arrivals.
"""
