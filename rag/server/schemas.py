"""Wire types of ``rag serve``: pydantic request models and the JSON built for responses.

Requests are validated strictly (``extra="forbid"``: an unknown field is a 422, not ignored).
Responses are built from the ``to_dict()`` of :mod:`rag.types` (the same schema as ``--json``),
with each source path shown as :func:`display_source` gives it. Chat completions follow the
OpenAI chat-completions format (https://platform.openai.com/docs/api-reference/chat) so the
official clients work unchanged; the grounding (``sources``, ``citations``, ``abstained``)
travels in extra top-level fields that those clients keep (``response.model_extra``).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

MAX_TOP_K = 100
"""Largest ``top_k`` a request may ask for (search and chat)."""

LOW_RELEVANCE_COSINE = 0.25
"""A result set is flagged ``low_relevance`` when no hit's dense cosine reaches this: the same
floor below which the answerer abstains (README, "Answers": calibrated on XQuAD vs SciFact)."""

SESSION_ID = r"^[A-Za-z0-9_-]{1,64}$"
RECORD_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
GROUP = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"

Scalar = Union[StrictStr, StrictInt, StrictFloat, StrictBool]
FilterValue = Union[Scalar, list[Scalar]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests -------------------------------------------------------------------------------
class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    """OpenAI chat-completions request. The last message is the question (role ``user``,
    non-empty); earlier user/assistant turns are the history (follow-ups are rewritten with it
    before retrieval); system messages are accepted and not used (the grounding prompt is the
    server's). ``temperature``, ``top_p``, ``seed`` and ``n`` (1 only) are accepted for
    compatibility and do not change the answer. ``max_tokens`` caps the streamed pieces
    (``finish_reason: "length"``, no citations then). rag extensions: ``top_k``, ``filters``,
    ``session_id`` (record the turn in that session; a new one is made when absent)."""

    model: str = "rag"
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1)
    user: str | None = Field(None, max_length=128)
    stream_options: StreamOptions | None = None
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    filters: dict[str, FilterValue] | None = None
    session_id: str | None = Field(None, pattern=SESSION_ID)

    def question(self) -> str:
        return self.messages[-1].text() if self.messages[-1].role == "user" else ""

    def history(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages[:-1] if m.role in ("user", "assistant")]

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class SearchRequest(_Strict):
    """Retrieval only: ``query`` (non-empty), ``top_k`` in [1, 100], ``mode`` (default: the
    server's, hybrid), ``filters`` (``{"source": "*.md", "lang": "en"}``: globs allowed, a list
    means any of, all keys must match)."""

    query: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    filters: dict[str, FilterValue] | None = None


class RecordIn(_Strict):
    """One text record to ingest. ``id``: letters, digits, ``. _ -`` (a new id when absent);
    re-sending an id replaces that record. ``metadata``: JSON scalars or lists, filterable."""

    id: str | None = Field(None, pattern=RECORD_ID)
    title: str | None = Field(None, max_length=1000)
    text: str = Field(min_length=1)
    metadata: dict[str, FilterValue] = Field(default_factory=dict)


class DocumentsRequest(_Strict):
    """JSON ingest: ``records`` (1-1000). ``groups``: access groups of the new documents,
    honoured for admin keys only (other keys' uploads always get the key's own groups)."""

    records: list[RecordIn] = Field(min_length=1, max_length=1000)
    groups: list[str] | None = None


class FeedbackRequest(_Strict):
    session_id: str = Field(pattern=SESSION_ID)
    turn: int = Field(ge=1)
    rating: Literal["up", "down"]
    note: str | None = Field(None, max_length=2000)


# ---- responses ------------------------------------------------------------------------------
class Display:
    """How a stored source path is shown: relative to the uploads folder for uploaded files
    (``alice/notes.txt``), relative to the working folder when below it, else as stored. Why:
    the server's own folder layout is nobody's business."""

    def __init__(self, uploads_dir: str | Path):
        self.uploads = os.path.realpath(os.fspath(uploads_dir))

    def doc(self, doc_id: str) -> str:
        """A document key shown the same way (``source`` or ``source#record``)."""
        src, sep, rest = doc_id.partition("#")
        return self(src) + sep + rest

    def __call__(self, source: str) -> str:
        if source.startswith(self.uploads + os.sep):
            return source[len(self.uploads) + 1:]
        try:
            rel = os.path.relpath(source)
        except ValueError:
            return source
        return source if rel.startswith("..") else rel


def hit_wire(hit, n: int, display: Display) -> dict[str, Any]:
    """``Hit.to_dict()`` with the shown source and ``n``, the number ``[n]`` refers to."""
    d = hit.to_dict()
    d["n"] = n
    d["chunk"]["source"] = display(d["chunk"]["source"])
    d["chunk"]["doc_id"] = display.doc(d["chunk"]["doc_id"])
    return d


def citation_wire(c, display: Display) -> dict[str, Any]:
    d = c.to_dict()
    d["source"] = display(d["source"])
    d["doc_id"] = display.doc(d["doc_id"])
    return d


def low_relevance(hits: Sequence[Any]) -> bool:
    """True when no hit's dense cosine reaches :data:`LOW_RELEVANCE_COSINE` (or none came back)."""
    return not any(h.dense_score is not None and h.dense_score >= LOW_RELEVANCE_COSINE for h in hits)


def search_wire(query: str, mode: str, hits: Sequence[Any], generation: int | None, timings: Mapping[str, float],
                display: Display) -> dict[str, Any]:
    return {"object": "search.result", "query": query, "mode": mode, "generation": generation,
            "low_relevance": low_relevance(hits), "hits": [hit_wire(h, i, display) for i, h in enumerate(hits, 1)],
            "timings": dict(timings)}


def answer_extras(ans, display: Display) -> dict[str, Any]:
    """The grounding fields a chat response carries besides the OpenAI ones."""
    d = ans.to_dict()
    return {"citations": [citation_wire(c, display) for c in ans.citations], "abstained": ans.abstained,
            "low_relevance": ans.abstained or low_relevance(ans.hits), "kind": d["kind"], "short": d["short"],
            "generation": d["generation"], "query": d["query"], "sentences": d["sentences"],
            "dropped_markers": d["dropped_markers"], "timings": d["timings"]}


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def chat_completion(cid: str, model: str, ans, display: Display, *, session_id: str, turn: int | None) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` with ``sources`` (the retrieved hits, numbered) and
    the verified ``citations``."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.text}, "finish_reason": "stop",
                         "logprobs": None}],
            "sources": [hit_wire(h, i, display) for i, h in enumerate(ans.hits, 1)],
            **answer_extras(ans, display), "session_id": session_id, "turn": turn}


def chunk_event(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of the SSE stream (``extra``: rag's top-level fields)."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """The one-line JSON error, in the OpenAI shape (``error.message``) so their clients show it."""
    kind = kind or {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 409: "conflict_error", 413: "request_too_large",
                    415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 503: "unavailable"}.get(status, "server_error")
    return {"error": {"message": " ".join(str(message).split()), "type": kind, "code": status}}
