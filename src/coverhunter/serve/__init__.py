"""Identification as a service: an HTTP API and a web page over one catalogue index.

``coverhunter serve --index INDEX`` loads the model and the index once and answers
``POST /identify`` (an uploaded recording -> the JSON of ``identify --json``, with
segments for long recordings), ``GET /works``, ``GET /tracks/{id}``, ``GET /health``
and, when a token is configured, ``POST /tracks``. ``/`` is a page to check one
recording by hand; ``/docs`` the OpenAPI documentation.

- :mod:`.engine`: the model and index, decoding in killable child processes, one model
  thread;
- :mod:`.app`: the FastAPI application, limits and authentication.
"""

from .app import ServeConfig, create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
