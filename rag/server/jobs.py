"""Background index writes for ``rag serve``: one worker thread runs ingest and delete jobs in
order.

Why one thread: an index has a single writer (its lock), so parallel writes would only queue on
the lock; running them in one thread keeps request handlers free and readers answering from
the last committed state meanwhile. Jobs live in memory (the last :data:`KEEP_JOBS`); a restart
forgets them, not their effect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from ..records import utc_now

log = logging.getLogger("rag")

KEEP_JOBS = 1000
"""Finished jobs kept for ``GET /v1/jobs/{id}``; the oldest finished ones are forgotten first."""

MAX_QUEUED = 100
"""Jobs waiting at most; :meth:`JobQueue.submit` raises :class:`QueueFull` beyond."""


class QueueFull(Exception):
    """Too many jobs are waiting (HTTP 429)."""


@dataclass
class Job:
    """One background write. ``state``: queued -> running -> done | failed. ``progress``:
    ``{stage: {"done": n, "total": m}}`` as the ingest reports it (stages "files",
    "embedding"). ``report``: the ingest report (``IngestReport.to_dict()`` plus what the
    server adds), ``error``: one line when it failed."""

    id: str
    kind: str
    owner: str
    created: str = field(default_factory=utc_now)
    state: str = "queued"
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    progress: dict[str, dict[str, int]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "job", "kind": self.kind, "owner": self.owner, "state": self.state,
                "created": self.created, "started": self.started, "finished": self.finished, "seconds": self.seconds,
                "progress": {k: dict(v) for k, v in self.progress.items()}, "files": list(self.files),
                "report": self.report, "error": self.error}


Work = Callable[[Job, Callable[[str, int, int], None]], dict[str, Any]]
"""A job's body: ``work(job, progress) -> report``; raise to fail the job."""


class JobQueue:
    """A FIFO of :class:`Job` run by one daemon thread. Thread-safe."""

    def __init__(self, on_finish: Callable[[Job], None] | None = None):
        self._jobs: dict[str, Job] = {}
        self._work: dict[str, Work] = {}
        self._done_events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._on_finish = on_finish
        self._thread = threading.Thread(target=self._run, name="rag-jobs", daemon=True)
        self._thread.start()

    def submit(self, kind: str, owner: str, work: Work, files: list[str] | None = None) -> Job:
        """Queue ``work``; returns the queued Job. Raises QueueFull past :data:`MAX_QUEUED`."""
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= MAX_QUEUED:
                raise QueueFull(f"{waiting} jobs are waiting; try again later")
            job = Job(id="job-" + uuid.uuid4().hex[:16], kind=kind, owner=owner, files=list(files or []))
            self._jobs[job.id] = job
            self._work[job.id] = work
            self._done_events[job.id] = threading.Event()
            self._forget_old()
        self._queue.put(job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout_s: float) -> bool:
        """Block until the job finished (True) or ``timeout_s`` passed (False)."""
        ev = self._done_events.get(job_id)
        return ev.wait(timeout_s) if ev is not None else True

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for j in self._jobs.values():
                out[j.state] = out.get(j.state, 0) + 1
            return out

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the running job (queued ones are dropped)."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
        for j in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
            self._jobs.pop(j.id, None)
            self._done_events.pop(j.id, None)

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                job, work = self._jobs.get(job_id), self._work.pop(job_id, None)
            if job is None or work is None:
                continue
            job.state, job.started = "running", utc_now()
            t0 = time.perf_counter()

            def progress(stage: str, done: int, total: int, _job: Job = job) -> None:
                _job.progress[stage] = {"done": int(done), "total": int(total)}

            try:
                job.report = work(job, progress)
                job.state = "done"
            except Exception as e:  # noqa: BLE001 - a failed job is reported, the worker goes on
                job.error = " ".join(str(e).split()) or e.__class__.__name__
                job.state = "failed"
                log.warning("job %s (%s) failed: %s", job.id, job.kind, job.error)
            job.seconds = round(time.perf_counter() - t0, 3)
            job.finished = utc_now()
            if self._on_finish is not None:
                try:
                    self._on_finish(job)
                except Exception:  # noqa: BLE001
                    log.exception("job finish hook failed")
            ev = self._done_events.get(job.id)
            if ev is not None:
                ev.set()
