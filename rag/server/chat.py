"""``POST /v1/chat/completions``: OpenAI-compatible grounded answers, JSON or SSE.

The stream (``"stream": true``), as Server-Sent Events of ``chat.completion.chunk`` objects:

1. one event with ``delta: {"role": "assistant", "content": ""}`` and the retrieved
   ``sources`` (hits numbered ``n`` = the ``[n]`` of the answer), ``query``, ``generation``,
   ``session_id``: the only event that carries sources;
2. one event per answer piece: ``delta: {"content": piece}``;
3. a final event with ``delta: {}``, ``finish_reason`` ("stop", or "length" when
   ``max_tokens`` cut it) and the verified ``citations``, ``abstained``, ``low_relevance``,
   ``turn`` (the recorded turn, for feedback); and ``sources`` again, renumbered, when the
   answer cites them in another order than retrieval ranked them (answers number their sources
   1, 2, ... in order of first citation: ``sources[n - 1]`` of this event is ``[n]``);
4. ``data: [DONE]``.

A client that disconnects stops the generation at the next piece; the turn is then not
recorded. The engine's blocking stream runs in a worker thread that hands pieces to the
event loop through a queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import RagError
from ..types import Answer
from .auth import Principal
from .schemas import ChatRequest, answer_extras, chat_completion, chunk_event, completion_id, error_body, hit_wire
from .service import Service, Sources

log = logging.getLogger("rag")

MAX_STREAMS = 32
"""Answer streams generated at once; more wait for a free worker thread."""

POLL_S = 0.25
"""How often a waiting stream checks whether its client is still there (seconds)."""

_pool = ThreadPoolExecutor(max_workers=MAX_STREAMS, thread_name_prefix="rag-stream")


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def add_routes(app: FastAPI) -> None:
    from .app import ApiError, ctx_of, principal, ready, require_index

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request, p: Principal = Depends(principal),
                               svc: Service = Depends(ready)):
        question = req.question().strip()
        if not question:
            raise ApiError(422, "messages: the last message must be a non-empty question from role 'user'")
        require_index(svc)
        if req.filters is not None:  # a bad filter is a 422 now, not an error event inside a 200 stream
            from ..engine import make_filter

            make_filter(req.filters, p.principals)
        session_id = req.session_id or uuid.uuid4().hex[:12]
        if req.session_id:  # continuing a session: it must be this caller's (or new)
            owner = await run_in_threadpool(svc.session_owner, session_id)
            if owner is not None and owner != p.user and not p.local:
                raise ApiError(404, f"no session {session_id!r}")
        turn = _Turn(svc, p, req, question, session_id)
        if req.stream:
            return StreamingResponse(_stream(ctx_of(request), request, turn), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        t0 = time.perf_counter()
        ans = await run_in_threadpool(turn.collect)
        n = await run_in_threadpool(turn.record, ans, time.perf_counter() - t0)
        return JSONResponse(chat_completion(completion_id(), req.model, ans, svc.display, session_id=session_id, turn=n))


class _Turn:
    """One question of one caller: runs the engine and records the answer."""

    def __init__(self, svc: Service, p: Principal, req: ChatRequest, question: str, session_id: str):
        self.svc, self.p, self.req, self.question, self.session_id = svc, p, req, question, session_id

    def events(self, stop: threading.Event | None = None):
        return self.svc.answer_events(self.question, history=self.req.history(), top_k=self.req.top_k,
                                      filters=self.req.filters, principals=self.p.principals, stop=stop)

    def collect(self) -> Answer:
        final = None
        for ev in self.events():
            if isinstance(ev, Answer):
                final = ev
        if final is None:
            raise RagError("the engine returned no answer")
        return final

    def record(self, ans: Answer, latency_s: float) -> int | None:
        user = f"{self.p.user}/{self.req.user}" if self.req.user else self.p.user
        try:
            return self.svc.record_turn(ans, owner=self.p.user, user_id=user, session_id=self.session_id,
                                        latency_s=latency_s)
        except RagError as e:  # an answer is not lost because its record could not be written
            log.error("could not record the turn: %s", e)
            return None


async def _stream(ctx, request: Request, turn: _Turn) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    metrics = ctx.metrics

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down)
            stop.set()

    def produce() -> None:
        events = turn.events(stop)
        try:
            for ev in events:
                if isinstance(ev, str):
                    metrics.pieces.inc()
                put(("event", ev))
                if stop.is_set():
                    break
        except Exception as e:  # noqa: BLE001 - reported in the stream as one error event
            put(("error", e))
        finally:
            events.close()  # GeneratorExit inside the engine: generation stops here
            put(("end", None))

    cid, created, model = completion_id(), int(time.time()), turn.req.model
    limit = turn.req.token_limit()
    t0 = time.perf_counter()
    metrics.streams_active.inc()
    finished = False
    try:
        _pool.submit(produce)
        pieces = 0
        answer: Answer | None = None
        sent: tuple = ()  # the hits of the sources event
        finish = "stop"
        while True:
            try:
                kind, item = await asyncio.wait_for(q.get(), POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if kind == "end":
                break
            if kind == "error":
                status = 500
                if isinstance(item, RagError):
                    from .app import rag_error_status

                    status = rag_error_status(item)
                    msg = str(item).splitlines()[0] if str(item) else item.__class__.__name__
                else:
                    log.error("answer stream failed", exc_info=item)
                    msg = f"internal error: {item.__class__.__name__}"
                yield _sse(error_body(status, msg))
                break
            if isinstance(item, Sources):
                sent = item.hits
                yield _sse(chunk_event(cid, model, created, {"role": "assistant", "content": ""},
                                       sources=[hit_wire(h, i, turn.svc.display) for i, h in enumerate(item.hits, 1)],
                                       query=item.query, generation=item.generation, session_id=turn.session_id))
            elif isinstance(item, str):
                if limit is not None and pieces >= limit:
                    finish = "length"
                    stop.set()
                    break
                if pieces == 0:
                    metrics.first_token.observe(time.perf_counter() - t0)
                pieces += 1
                yield _sse(chunk_event(cid, model, created, {"content": item}))
            elif isinstance(item, Answer):
                answer = item
        if finish == "length":
            yield _sse(chunk_event(cid, model, created, {}, finish_reason="length", citations=[], abstained=False,
                                   session_id=turn.session_id, turn=None))
        elif answer is not None:
            n = await run_in_threadpool(turn.record, answer, time.perf_counter() - t0)
            extras = answer_extras(answer, turn.svc.display)
            if [h.chunk.id for h in answer.hits] != [h.chunk.id for h in sent]:  # renumbered: [1] is the first cited
                extras["sources"] = [hit_wire(h, i, turn.svc.display) for i, h in enumerate(answer.hits, 1)]
            yield _sse(chunk_event(cid, model, created, {}, finish_reason="stop", **extras,
                                   session_id=turn.session_id, turn=n))
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        stop.set()
        metrics.streams_active.dec()
        if not finished:
            metrics.streams_cancelled.inc()
