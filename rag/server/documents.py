"""Document routes of ``rag serve``: upload (multipart files or JSON records), list, delete,
and job status.

Uploaded files are kept under ``<uploads>/<user>/<file name>`` (records as
``<uploads>/<user>/records/<id>.jsonl``), and that path is their document key: uploading the
same name again replaces the document (the ingest is incremental), and two users' files of the
same name stay apart. Writes run as background jobs (:mod:`.jobs`); readers keep answering from
the last committed state meanwhile.

Access: an admin key lists and may delete every document; other keys list the public documents
and their groups'. A key's uploads get exactly the key's groups (a group column in an uploaded file is
ignored); an admin key's uploads get the ``groups`` the request names (public when none). A
key without groups that is not admin cannot upload (its documents would be public). A non-admin
key may delete a file only when every group of the file is one of its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .auth import Principal
from .jobs import Job
from .schemas import GROUP, DocumentsRequest
from .service import Service

log = logging.getLogger("rag")

MAX_FILES = 100
"""Files in one multipart upload."""

DELETE_WAIT_S = 60.0
"""How long ``DELETE /v1/documents/{id}`` waits for its job before answering 202."""

_BAD_NAME_CHARS = re.compile(r"[/\\\x00-\x1f\x7f*?\[\]]")
_RESERVED_METADATA = {"id", "title", "text", "acl"}


def check_file_name(name: str | None) -> str:
    """The upload's file name when it is a plain name; ValueError naming the reason otherwise:
    empty, a path (``/``, ``\\``, ``.``, ``..``), hidden (leading ``.``), control or glob
    characters (a glob character would make a later delete match other files), over 255 bytes."""
    if not name:
        raise ValueError("a file has no name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{name!r}: file names may not contain a path")
    if _BAD_NAME_CHARS.search(name):
        raise ValueError(f"{name!r}: file names may not contain control or glob characters (* ? [ ])")
    if name.startswith("."):
        raise ValueError(f"{name!r}: hidden file names (starting with '.') are not accepted")
    if len(name.encode("utf-8")) > 255:
        raise ValueError(f"{name[:40]!r}...: file name longer than 255 bytes")
    return name


def upload_groups(p: Principal, requested: Sequence[str] | None) -> list[str]:
    """The access groups an upload by ``p`` gets (see the module docstring). Raises ApiError
    403 for a non-admin key without groups or naming groups, 422 for a bad group name."""
    from .app import ApiError

    if p.admin or p.local:
        groups = list(requested or [])
        for g in groups:
            if not re.fullmatch(GROUP, g):
                raise ApiError(422, f"groups: {g!r} is not a group name (letters, digits, . _ @ -)")
        return sorted(set(groups))
    if requested:
        raise ApiError(403, "groups: only an admin key may choose the groups of an upload (yours get the key's groups)")
    if not p.groups:
        raise ApiError(403, "this key has no access groups, so its uploads would be public: ask for an admin key")
    return sorted(p.groups)


def manager_view(p: Principal) -> tuple[str, ...] | None:
    """The groups whose documents ``p`` may list and delete: every document for an admin key
    (managing documents is what it is for; its searches and answers still run with its own
    groups), the key's groups otherwise."""
    return None if (p.admin or p.local) else p.principals


def _user_dir(svc: Service, p: Principal) -> Path:
    return svc.uploads_dir / p.user


def _write_atomic(path: Path, data_file, chunk: int = 2**20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                block = data_file.read(chunk)
                if not block:
                    break
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with_suppress_unlink(tmp)
        raise


def with_suppress_unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _glob_escape(path: str) -> str:
    """``path`` as a pattern matching only itself (fnmatch: ``[`` ``*`` ``?`` in brackets)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def add_routes(app: FastAPI) -> None:
    from .app import ApiError, ctx_of, principal, ready

    @app.post("/v1/documents", status_code=202)
    async def upload(request: Request, p: Principal = Depends(principal), svc: Service = Depends(ready)) -> JSONResponse:
        ctx = ctx_of(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            saved, groups, options = await _save_multipart(request, svc, p)
        elif ctype == "application/json":
            saved, groups, options = await _save_records(request, svc, p)
        else:
            raise ApiError(415, "send files as multipart/form-data (field 'files') or records as application/json")
        job = ctx.jobs.submit("ingest", p.user, _ingest_work(svc, p, saved, groups, options),
                              files=[svc.display(str(s)) for s in saved])
        return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/documents")
    async def list_documents(p: Principal = Depends(principal), svc: Service = Depends(ready)) -> JSONResponse:
        docs = await run_in_threadpool(svc.documents, manager_view(p))
        for d in docs:
            d.pop("_key", None)
        return JSONResponse({"object": "list", "data": docs})

    @app.delete("/v1/documents/{doc_id}")
    async def delete_document(doc_id: str, request: Request, p: Principal = Depends(principal),
                              svc: Service = Depends(ready)) -> JSONResponse:
        ctx = ctx_of(request)
        docs = await run_in_threadpool(svc.documents, manager_view(p))
        doc = next((d for d in docs if d["id"] == doc_id), None)
        if doc is None:
            raise ApiError(404, f"no document {doc_id!r}")
        if not (p.admin or p.local) and (not doc["groups"] or not set(doc["groups"]) <= set(p.groups)):
            raise ApiError(403, f"document {doc_id!r} belongs to groups this key is not in (or is public): "
                                "only an admin key may delete it")
        key = doc["_key"]

        def work(job: Job, progress) -> dict[str, Any]:
            report = svc.rag.delete([_glob_escape(key)], wait_s=60.0).to_dict()
            if key.startswith(str(svc.uploads_dir.resolve()) + os.sep) or key.startswith(str(svc.uploads_dir) + os.sep):
                with_suppress_unlink(key)  # erasure: the uploaded bytes go with the document
            return _public_report(report, svc, p)

        job = ctx.jobs.submit("delete", p.user, work, files=[doc["source"]])
        done = await run_in_threadpool(ctx.jobs.wait, job.id, DELETE_WAIT_S)
        body = ctx.jobs.get(job.id).to_dict()
        if not done:
            return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
        if body["state"] == "failed":
            raise ApiError(500, f"delete failed: {body['error']}")
        return JSONResponse(body)

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, request: Request, p: Principal = Depends(principal)) -> JSONResponse:
        job = ctx_of(request).jobs.get(job_id)
        if job is None or (job.owner != p.user and not (p.admin or p.local)):
            raise ApiError(404, f"no job {job_id!r}")
        return JSONResponse(job.to_dict())


async def _save_multipart(request: Request, svc: Service, p: Principal):
    from .app import ApiError

    form = await request.form(max_files=MAX_FILES, max_fields=10)
    try:
        unknown = sorted(set(form.keys()) - {"files", "groups"})
        if unknown:
            raise ApiError(422, f"{unknown[0]}: unknown form field (send 'files' and, for admin keys, 'groups')")
        files = form.getlist("files")
        if not files or not all(isinstance(f, UploadFile) for f in files):
            raise ApiError(422, "files: at least one file is required (multipart field 'files')")
        requested = [g.strip() for v in form.getlist("groups") for g in str(v).split(",") if g.strip()]
        groups = upload_groups(p, requested)
        names: list[str] = []
        for f in files:
            try:
                names.append(check_file_name(f.filename))
            except ValueError as e:
                raise ApiError(422, f"files: {e}") from None
        if len(set(names)) != len(names):
            raise ApiError(422, "files: the same file name appears twice")
        folder = _user_dir(svc, p)
        for name in names:  # defence in depth: the target must be directly in the user's folder
            if (folder / name).resolve().parent != folder.resolve():
                raise ApiError(422, f"files: {name!r}: file names may not contain a path")
        saved = []
        for f, name in zip(files, names):  # validated all first: a bad name writes nothing
            await run_in_threadpool(_write_atomic, folder / name, f.file)
            saved.append(folder / name)
        return saved, groups, {}
    finally:
        await form.close()


async def _save_records(request: Request, svc: Service, p: Principal):
    from .app import ApiError, _validation_message
    from fastapi.exceptions import RequestValidationError

    body = await request.body()
    try:
        req = DocumentsRequest.model_validate_json(body)
    except ValidationError as e:
        raise ApiError(422, _validation_message(RequestValidationError(e.errors()))) from None
    groups = upload_groups(p, req.groups)
    ids = [r.id or uuid.uuid4().hex[:16] for r in req.records]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "records: the same id appears twice")
    fields: set[str] = set()
    for r in req.records:
        bad = _RESERVED_METADATA & set(r.metadata)
        if bad:
            raise ApiError(422, f"records.metadata: {sorted(bad)[0]!r} is reserved")
        fields.update(r.metadata)
    folder = _user_dir(svc, p) / "records"
    saved = []
    for rid, r in zip(ids, req.records):
        line = json.dumps({"id": rid, "title": r.title, "text": r.text, **r.metadata}, ensure_ascii=False) + "\n"
        path = folder / f"{rid}.jsonl"
        import io

        await run_in_threadpool(_write_atomic, path, io.BytesIO(line.encode("utf-8")))
        saved.append(path)
    return saved, groups, {"metadata_fields": tuple(sorted(fields)), "id_field": "id", "title_field": "title",
                           "text_field": "text"}


def _ingest_work(svc: Service, p: Principal, paths: list[Path], groups: list[str], options: dict[str, Any]):
    def work(job: Job, progress) -> dict[str, Any]:
        from ..loaders import LoaderOptions

        opts = LoaderOptions(**options)
        report = svc.rag.ingest([str(x) for x in paths], acl=groups, loader_options=opts, wait_s=60.0,
                                progress=progress).to_dict()
        skipped = {s["source"] for s in report.get("skipped", [])}
        if skipped:  # a file that could not be indexed is not kept (unless an older version is indexed)
            indexed = {d["_key"] for d in svc.documents(None)} if svc.has_index() else set()
            for s in skipped:
                if s not in indexed and any(str(x) == s or str(x.resolve()) == s for x in paths):
                    with_suppress_unlink(s)
        report["groups"] = groups
        return _public_report(report, svc, p)

    return work


def _public_report(report: dict[str, Any], svc: Service, p: Principal) -> dict[str, Any]:
    """The ingest report as the caller may see it: sources shown relative to the uploads
    folder, and a duplicate's kept document named only when it is the caller's own upload."""
    own = str(_user_dir(svc, p)) + os.sep
    own_resolved = str(_user_dir(svc, p).resolve()) + os.sep
    report = dict(report)
    report.pop("index_dir", None)
    report["skipped"] = [{**s, "source": svc.display(s["source"])} for s in report.get("skipped", [])]
    report["files_removed"] = [svc.display(s) for s in report.get("files_removed", [])]
    dups = []
    for d in report.get("duplicates", []):
        d = dict(d)
        d["key"] = svc.display(str(d.get("key", "")))
        kept = str(d.get("kept_key", ""))
        mine = kept.startswith(own) or kept.startswith(own_resolved) or p.admin or p.local
        d["kept_key"] = svc.display(kept) if mine else "another document"
        dups.append(d)
    report["duplicates"] = dups
    return report
