"""The FastAPI application: routes, limits, authentication.

Limits are enforced before any work is done: a request body larger than
``max_upload_mb`` gets 413 (by its Content-Length, or as soon as the bytes received
pass the limit), and when ``queue_size`` requests are already admitted (decoding,
waiting for the model or running) the next one gets 503 with a ``Retry-After``
estimate, so the backlog never grows without bound. Admitted bodies are spooled to a
temporary file (memory up to 1 MB each).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .engine import Engine, InputError, ServeConfig, upload_suffix

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GUARDED = {("POST", "/identify"), ("POST", "/tracks")}  # bodies spooled, admission counted
AUDIO_TYPES = ("audio/", "video/")  # containers such as WebM and MP4 are sent as video/*
OTHER_OK_TYPES = {"application/octet-stream", "application/ogg", ""}


# ---------------------------------------------------------------------------
# limits (pure ASGI, around the whole app)


async def _send_json(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class Admission:
    """ASGI middleware: body size limit, bounded admission, body spooled before the app runs.

    Parameters
    ----------
    app : ASGI app
    max_bytes : int
    size : int
        Requests of the guarded routes admitted at once.
    retry_after : callable
        () -> seconds to suggest in ``Retry-After``.
    """

    def __init__(self, app, max_bytes: int, size: int, retry_after):
        self.app, self.max_bytes, self.size, self.retry_after = app, max_bytes, size, retry_after
        self.busy = 0  # only touched on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) not in GUARDED:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            length = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            length = -1
        if length > self.max_bytes:
            return await _send_json(send, 413, self._too_large())
        if self.busy >= self.size:
            wait = self.retry_after()
            return await _send_json(
                send, 503, f"busy: {self.busy} requests in progress; retry in {wait} s", {"Retry-After": wait}
            )
        self.busy += 1
        try:
            with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
                total, more = 0, True
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunk = msg.get("body", b"")
                    total += len(chunk)
                    if total > self.max_bytes:
                        return await _send_json(send, 413, self._too_large())
                    spool.write(chunk)
                    more = msg.get("more_body", False)
                spool.seek(0)
                await self.app(scope, self._replay(spool, total, receive), send)
        finally:
            self.busy -= 1

    def _too_large(self) -> str:
        return f"upload too large: the limit is {self.max_bytes / 1e6:g} MB"

    @staticmethod
    def _replay(spool, total: int, receive):
        left = [total]

        async def replay():
            if left[0] < 0:
                return await receive()  # body done: wait for the disconnect
            chunk = spool.read(1 << 16)
            left[0] -= len(chunk)
            more = left[0] > 0
            if not more:
                left[0] = -1
            return {"type": "http.request", "body": chunk, "more_body": more}

        return replay


# ---------------------------------------------------------------------------
# the app


def create_app(cfg: ServeConfig, engine: Engine | None = None):
    """The ASGI application for ``cfg`` (the engine is made at start-up unless given).

    Returns
    -------
    ASGI app
        ``Admission`` around the FastAPI app; the FastAPI app is its ``.app``.
    """
    state: dict = {"engine": engine}

    @asynccontextmanager
    async def lifespan(_app):
        if state["engine"] is None:
            state["engine"] = Engine(cfg)
        yield
        if engine is None:
            state["engine"].close()

    api = FastAPI(
        title="coverhunter",
        lifespan=lifespan,
        summary="Cover song identification against a catalogue",
        description="Upload a recording and get the catalogue works it performs, with "
        "scores, calibrated probabilities, verdicts and time offsets; "
        "long recordings are split into segments (which work where).",
    )
    bearer = HTTPBearer(auto_error=False, description="the token the server was started with")

    def eng() -> Engine:
        return state["engine"]

    def _token_ok(cred: HTTPAuthorizationCredentials | None) -> bool:
        return bool(
            cfg.token and cred and secrets.compare_digest(cred.credentials.encode(), cfg.token.encode())
        )

    def reader(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not cfg.open_reads and not _token_ok(cred):
            raise HTTPException(
                401,
                "this server needs a token for reads (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def writer(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not _token_ok(cred):
            raise HTTPException(
                401,
                "adding tracks needs the server's token (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @api.exception_handler(InputError)
    async def _input_error(_request, e: InputError):
        return JSONResponse({"detail": e.message}, status_code=e.status)

    async def _decode_upload(file: UploadFile) -> tuple:
        """Check the part's type, copy it to a server-named file, decode it in a child."""
        name = Path(file.filename or "upload").name or "upload"
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith(AUDIO_TYPES) or ctype in OTHER_OK_TYPES):
            raise InputError(415, f"{name}: expected an audio file, got content type {ctype!r}")
        src = eng().tmp / f"{uuid.uuid4().hex}{upload_suffix(name)}"
        size = await run_in_threadpool(_copy, file, src)
        if size == 0:
            src.unlink(missing_ok=True)
            raise InputError(422, f"{name}: empty upload, no audio in it")
        try:
            feat = await run_in_threadpool(eng().decode, src, name, cfg.max_duration_s, cfg.decode_timeout_s)
        except BaseException:
            src.unlink(missing_ok=True)
            raise
        return feat, src, name

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse((STATIC / "index.html").read_text())

    @api.get("/health", summary="Liveness, catalogue size and load (503: the catalogue is damaged)")
    def health():
        h = eng().health()
        body = {
            **h,
            "token_for_reads": not cfg.open_reads,
            "writes": bool(cfg.token),
            "limits": {
                "max_upload_mb": cfg.max_upload_mb,
                "max_duration_s": cfg.max_duration_s,
                "decode_timeout_s": cfg.decode_timeout_s,
                "queue_size": cfg.queue_size,
            },
        }
        return JSONResponse(body, status_code=200 if h["status"] == "ok" else 503)

    @api.post(
        "/identify",
        dependencies=[Depends(reader)],
        summary="Which catalogue works does this recording perform?",
    )
    async def identify(
        file: UploadFile = File(..., description="a recording in any audio format"),
        top: int = Query(10, ge=1, le=100),
        segments: bool | None = Query(
            None, description="which work where; default: for recordings longer than 10 minutes"
        ),
        alignment: bool = Query(False, description="chunk similarities of the query and its best match"),
        rerank: int | None = Query(
            None,
            ge=0,
            le=10_000,
            description=(
                "shortlist length re-ranked by chroma alignment (0 = embedding search "
                "alone; default: the service's)"
            ),
        ),
        rerank_grow_after: int | None = Query(
            None,
            ge=0,
            description=(
                "catalogue size beyond which the shortlist grows as rerank * "
                "sqrt(size / N) (0 = never; default: the service's)"
            ),
        ),
        rerank_versions: int | None = Query(
            None,
            ge=1,
            le=100,
            description=("recordings aligned per shortlisted work (default: the service's)"),
        ),
    ):
        (feat, fine), src, name = await _decode_upload(file)
        src.unlink(missing_ok=True)
        return await eng().on_model_thread(
            eng().identify,
            feat,
            name,
            top=top,
            segments=segments,
            alignment=alignment,
            rerank=rerank,
            rerank_grow_after=rerank_grow_after,
            rerank_versions=rerank_versions,
            fine=fine,
        )

    @api.get("/works", dependencies=[Depends(reader)], summary="The catalogue's works and their tracks")
    def works(offset: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=100_000)):
        all_works = eng().works()
        return {"n_works": len(all_works), "offset": offset, "works": all_works[offset : offset + limit]}

    @api.get("/tracks/{track_id}", dependencies=[Depends(reader)], summary="One catalogue track")
    def track(track_id: str):
        info = eng().track_info(track_id)
        if info is None:
            raise HTTPException(404, f"no track {track_id!r} in the catalogue")
        return info

    @api.get(
        "/tracks/{track_id}/audio",
        dependencies=[Depends(reader)],
        summary="The catalogue recording's audio, when the server can reach it",
    )
    def track_audio(track_id: str):
        if eng().track(track_id) is None:
            raise HTTPException(404, f"no track {track_id!r} in the catalogue")
        path = eng().audio_path(track_id)
        if path is None:
            raise HTTPException(404, f"the audio of track {track_id!r} is not reachable by the server")
        return FileResponse(path)

    if cfg.token:

        @api.post(
            "/tracks",
            dependencies=[Depends(writer)],
            status_code=201,
            summary="Add a recording to the catalogue (needs the token)",
        )
        async def add_track(file: UploadFile = File(...), work: str = Form(...), track_id: str = Form(...)):
            (feat, fine), src, name = await _decode_upload(file)
            try:
                return await eng().on_model_thread(eng().add_track, feat, src, track_id, work, name, fine)
            finally:
                src.unlink(missing_ok=True)

    def retry_after() -> int:
        e = state["engine"]
        return int(min(120, max(1, math.ceil((e.service_s if e else 1.0) * cfg.queue_size / 2))))

    app = Admission(api, int(cfg.max_upload_mb * 1e6), cfg.queue_size, retry_after)
    return app


def _copy(file: UploadFile, dst: Path) -> int:
    """Copy an upload to ``dst``; returns its size."""
    import shutil

    file.file.seek(0)
    with open(dst, "wb") as out:
        shutil.copyfileobj(file.file, out, 1 << 20)
        return out.tell()


def serve(cfg: ServeConfig, host: str | None = None, port: int | None = None) -> None:
    """Run the service with uvicorn until interrupted, on ``host``:``port`` (None: the
    config's, ``127.0.0.1:8000`` unless set)."""
    import uvicorn

    host = cfg.host if host is None else host
    port = cfg.port if port is None else port

    if cfg.token is None and os.environ.get("COVERHUNTER_TOKEN"):
        from dataclasses import replace

        cfg = replace(cfg, token=os.environ["COVERHUNTER_TOKEN"])
    if not cfg.open_reads and not cfg.token:
        raise ValueError("--protect-reads needs a token (--token or $COVERHUNTER_TOKEN)")
    # made before uvicorn runs, so that a missing or damaged index or model is one error
    # line (and exit status 1) from the command line, not a traceback from the app's start
    engine = Engine(cfg)
    try:
        log.info("coverhunter serve on http://%s:%d (docs: /docs)", host, port)
        uvicorn.run(create_app(cfg, engine), host=host, port=port, log_level="info")
    finally:
        engine.close()


__all__ = ["ServeConfig", "create_app", "serve"]
