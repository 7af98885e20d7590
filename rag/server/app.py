"""The FastAPI application of ``rag serve``: middleware, errors, and the routes.

Routes (all ``/v1/*`` need an API key unless the server runs keyless on 127.0.0.1):

- ``POST /v1/chat/completions``: OpenAI-compatible answers, JSON or SSE (:mod:`.chat`)
- ``POST /v1/search``: retrieval only
- ``POST /v1/documents`` (multipart files or JSON records), ``GET /v1/documents``,
  ``DELETE /v1/documents/{id}``, ``GET /v1/jobs/{id}`` (:mod:`.documents`)
- ``POST /v1/feedback``, ``GET /v1/sessions/{id}``
- ``GET /health`` (200 only after warm-up), ``GET /metrics`` (Prometheus text), ``GET /`` (page)

Every error is one JSON line ``{"error": {"message", "type", "code"}}`` with its status code;
a request that fails validation changes nothing. Blocking engine calls run in worker threads
so the event loop keeps serving while a model thinks.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (ConfigError, GenerationError, IndexFormatError, IndexLockedError, IndexNotFoundError, ModelError,
                      RagError)
from .auth import KeyMiddleware, KeyStore, Principal, bearer_key
from .jobs import JobQueue, QueueFull
from .metrics import Metrics, MetricsMiddleware, too_large_message
from .schemas import FeedbackRequest, SearchRequest, error_body, search_wire
from .service import Service

log = logging.getLogger("rag")

STATIC = Path(__file__).parent / "static"
MAX_JSON_BYTES = 2 * 2**20
"""Largest JSON body (bytes) outside ``/v1/documents``."""


class ApiError(Exception):
    """An error answered as one JSON line with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass
class ServerContext:
    """Everything a request handler needs, shared by all requests of one app."""

    service: Service
    keys: KeyStore
    jobs: JobQueue
    metrics: Metrics
    max_upload_bytes: int
    model_name: str = "rag"
    started: float = field(default_factory=time.time)


def ctx_of(request: Request) -> ServerContext:
    return request.app.state.ctx


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller's principal, found by :class:`KeyMiddleware` before the
    request was read (401 when its key is missing or wrong)."""
    found = request.scope.get("rag.principal")
    if found is not None:
        return found
    ctx = ctx_of(request)
    key = bearer_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    p = ctx.keys.authenticate(key)
    if p is None:
        raise ApiError(401, "missing API key (send 'Authorization: Bearer KEY')" if not key else "invalid API key",
                       headers={"WWW-Authenticate": "Bearer"})
    return p


def ready(request: Request) -> Service:
    """FastAPI dependency: the service once warm-up is over (503 before)."""
    svc = ctx_of(request).service
    if not svc.ready.is_set():
        raise ApiError(503, "warming up: models are loading; GET /health says when ready", headers={"Retry-After": "5"})
    if svc.warm_up_error:
        raise ApiError(503, f"warm-up failed: {svc.warm_up_error}")
    return svc


def require_index(svc: Service) -> None:
    if not svc.has_index():
        raise ApiError(409, "the index holds no documents yet: upload some first (POST /v1/documents)")


def create_app(rag, keys: KeyStore, *, uploads_dir: str | Path | None = None, max_upload_bytes: int = 50 * 2**20,
               warm_up: bool = True, records=None, generation_slots: int = 1) -> FastAPI:
    """Build the app around one shared :class:`rag.RAG`.

    ``keys``: :meth:`KeyStore.load` or :meth:`KeyStore.local`. ``uploads_dir``: where uploaded
    files are kept (default ``<index>/uploads``). ``max_upload_bytes``: largest upload request
    (413 beyond). ``warm_up``: load the models in a thread at start-up (``/health`` says ready
    when done); False marks the server ready at once (tests of the routes only).
    ``records``: a :class:`rag.records.RecordStore` (default: the index's).
    ``generation_slots``: answers generated at once (:class:`rag.server.service.Service`).
    """
    from . import chat, documents

    uploads = Path(uploads_dir) if uploads_dir is not None else Path(rag.index_dir) / "uploads"
    service = Service(rag, uploads, records=records, generation_slots=generation_slots)
    metrics = Metrics()
    jobs = JobQueue(on_finish=lambda job: metrics.job_finished(job.kind, job.state))
    ctx = ServerContext(service=service, keys=keys, jobs=jobs, metrics=metrics, max_upload_bytes=max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_up:
            threading.Thread(target=service.warm_up, name="rag-warm-up", daemon=True).start()
        else:
            service.ready.set()
        yield
        jobs.close()

    app = FastAPI(title="rag", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.ctx = ctx
    # 413 past the limit: uploads may be large, every other body is small JSON.
    app.add_middleware(KeyMiddleware, keys=keys)  # inside the metrics one, so 401s are counted
    app.add_middleware(MetricsMiddleware, metrics=metrics, limit_for=lambda path: (
        max_upload_bytes if path.rstrip("/") == "/v1/documents" else MAX_JSON_BYTES))
    _install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> JSONResponse:
        if not service.ready.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        if service.warm_up_error:
            return JSONResponse({"status": "error", "error": service.warm_up_error}, status_code=503)
        info = await run_in_threadpool(_index_summary, service)
        return JSONResponse({"status": "ready", "warm_up_s": round(service.warm_up_s or 0.0, 3), **info,
                             "auth": "keyless (127.0.0.1 only)" if keys.is_local else "api keys",
                             "jobs": jobs.counts()})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = metrics.render(jobs.counts())
        return Response(body, media_type=content_type)

    @app.post("/v1/search")
    async def search(req: SearchRequest, p: Principal = Depends(principal), svc: Service = Depends(ready)) -> JSONResponse:
        if not req.query.strip():
            raise ApiError(422, "query: must not be empty")
        require_index(svc)
        hits, gen, timings = await run_in_threadpool(svc.search, req.query, top_k=req.top_k, mode=req.mode,
                                                     filters=req.filters, principals=p.principals)
        mode = req.mode or svc.rag.config.retrieval.mode
        return JSONResponse(search_wire(req.query, mode, hits, gen, timings, svc.display))

    @app.post("/v1/feedback")
    async def feedback(req: FeedbackRequest, p: Principal = Depends(principal), svc: Service = Depends(ready)) -> JSONResponse:
        await _own_session(svc, req.session_id, p)
        try:
            rec = await run_in_threadpool(svc.records().set_feedback, req.session_id, req.turn, req.rating, req.note)
        except ConfigError:
            raise ApiError(404, f"no turn {req.turn} in session {req.session_id!r}") from None
        rec = rec or {"feedback": req.rating, "feedback_note": req.note}
        return JSONResponse({"object": "feedback", "session_id": req.session_id, "turn": req.turn,
                             "rating": rec.get("feedback"), "note": rec.get("feedback_note")})

    @app.get("/v1/sessions/{session_id}")
    async def session(session_id: str, p: Principal = Depends(principal), svc: Service = Depends(ready)) -> JSONResponse:
        owner = await _own_session(svc, session_id, p)
        turns = await run_in_threadpool(svc.records().turns, session_id)
        for t in turns:
            for c in t.get("citations") or []:
                if isinstance(c, dict):
                    if c.get("source"):
                        c["source"] = svc.display(str(c["source"]))
                    if c.get("doc_id"):
                        c["doc_id"] = svc.display.doc(str(c["doc_id"]))
            t.pop("index_dir", None)
        return JSONResponse({"object": "session", "session_id": session_id, "user_id": owner, "turns": turns})

    @app.get("/v1/stats")
    async def stats(format: str = "html", since: str | None = None, user: str | None = None,
                    p: Principal = Depends(principal), svc: Service = Depends(ready)) -> Response:
        """The ``rag stats`` figures for admin keys: the HTML page (default) or ``?format=json``."""
        from ..stats import render_stats_html, stats_for_index

        if not (p.admin or p.local):
            raise ApiError(403, "stats: only an admin key may read the usage records")
        if format not in ("html", "json"):
            raise ApiError(422, "format: must be html or json")
        try:
            figures = await run_in_threadpool(stats_for_index, svc.rag.index_dir, svc.records(), since=since, user_id=user)
        except ConfigError as e:
            raise ApiError(422, str(e)) from None
        if format == "json":
            return JSONResponse(figures)
        return Response(render_stats_html(figures), media_type="text/html")

    chat.add_routes(app)
    documents.add_routes(app)
    return app


async def _own_session(svc: Service, session_id: str, p: Principal) -> str:
    """The session's owner when it is ``p``'s (404 otherwise: another user's session does not
    exist for this caller)."""
    import re

    from .schemas import SESSION_ID

    if not re.fullmatch(SESSION_ID, session_id):
        raise ApiError(422, "session_id: letters, digits, _ and - only (1-64)")
    owner = await run_in_threadpool(svc.session_owner, session_id)
    if owner is None or (owner != p.user and not p.local):
        raise ApiError(404, f"no session {session_id!r}")
    return owner


def _index_summary(svc: Service) -> dict[str, Any]:
    try:
        inf = svc.rag.info()
    except IndexNotFoundError:
        return {"generation": None, "documents": 0, "chunks": 0}
    return {"generation": inf.get("generation"), "documents": inf.get("documents"), "chunks": inf.get("chunks")}


# ---- errors ---------------------------------------------------------------------------------
_RAG_STATUS = ((ConfigError, 422), (IndexNotFoundError, 409), (IndexLockedError, 503), (IndexFormatError, 500),
               (GenerationError, 502), (ModelError, 500))


def rag_error_status(e: RagError) -> int:
    return next((s for t, s in _RAG_STATUS if isinstance(e, t)), 500)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "invalid request"
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {e.get('ctx', {}).get('error', e.get('msg'))}"
    if e.get("type") == "extra_forbidden":
        return f"{'.'.join(loc)}: unknown field"
    if e.get("type") == "missing" and not loc:
        return "a JSON body is required"
    more = f" (and {len(errs) - 1} more error(s))" if len(errs) > 1 else ""
    return f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}{more}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method in ("POST", "PUT", "PATCH") and ctype and ctype != "application/json" \
                and not ctype.endswith("+json"):
            return _error(415, f"send the request body as application/json, not {ctype}")
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed here",
               413: too_large_message(request.scope.get("rag.max_body_bytes"))}
        return _error(exc.status_code, msg.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return _error(429, str(exc), {"Retry-After": "10"})

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        status = rag_error_status(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(status, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {exc.__class__.__name__}")


def run_server(app: FastAPI, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app`` with uvicorn until SIGINT/SIGTERM (graceful: 5 s for open streams)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5, server_header=False)
    uvicorn.Server(config).run()
