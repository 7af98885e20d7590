"""The ``rag`` command line. Thin: parse, call the library, print text or ``--json``.

Exit codes: 0 ok, 1 user error (bad input, damaged index, every file failed), 2 usage error.
Errors are one line on stderr, never a traceback (``RAG_DEBUG=1`` shows tracebacks).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from . import cli_ops as _ops  # operating commands and options (click only at import)

DEFAULT_INDEX = "indexes/default"


class UserError(click.ClickException):
    exit_code = 1

    def show(self, file=None) -> None:  # one line, no "Error:" decoration from click
        click.echo(f"rag: error: {self.message}", err=True)


def _fail(msg: str) -> None:
    raise UserError(msg)


def _config(ctx: click.Context, overrides: dict[str, dict[str, Any]] | None = None):
    from .config import RagConfig

    path = ctx.obj.get("config_path") if ctx.obj else None
    cfg = RagConfig.load(path) if path else RagConfig()
    explicit = bool(path)
    if overrides:
        clean = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        clean = {s: kv for s, kv in clean.items() if kv}
        if clean:
            cfg = cfg.updated(clean)
            explicit = explicit or "embedding" in clean
    return cfg, explicit


def _open(ctx, index: str, overrides=None, create: bool = False, **kw):
    """Open (or, for ingest, create) the index with config file + flag overrides.

    The index's own settings (embedder, chunking, BM25) come from its manifest unless the user
    set them explicitly; retrieval and generation settings always come from file and flags.
    """
    from .index import is_remote_location
    from .pipeline import RAG

    if not is_remote_location(index) and os.path.exists(index) and not os.path.isdir(index):
        raise click.UsageError(f"--index {index}: is a file, not an index folder", ctx=ctx)
    cfg, explicit = _config(ctx, overrides)
    rag = (RAG.create if create else RAG.open)(index, cfg if explicit else None, **kw)
    if not explicit:
        if rag.store.exists():
            rag.config = rag.config.updated({k: v for k, v in cfg.to_dict().items() if k in ("retrieval", "generation")})
        else:
            rag.config = cfg
    return rag


def _parse_filters(filters: tuple[str, ...]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for f in filters:
        if "=" not in f:
            raise click.BadParameter(f"{f!r} is not KEY=VALUE", param_hint="--filter")
        k, v = f.split("=", 1)
        k = k.strip()
        if not k:
            raise click.BadParameter(f"{f!r} has an empty key", param_hint="--filter")
        val: Any = v
        if v.isdigit():
            val = int(v)
        if k in out:
            prev = out[k] if isinstance(out[k], list) else [out[k]]
            out[k] = prev + [val]
        else:
            out[k] = val
    return out or None


def _principals(groups: tuple[str, ...]) -> list[str] | None:
    return list(groups) if groups else None


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (defaults < file < flags).")
@click.option("-v", "--verbose", count=True, help="Log progress details to stderr (-vv for debug).")
@click.version_option("0.1.0", prog_name="rag")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Local retrieval-augmented generation: ingest documents, search them, ask cited questions."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    # pypdf reports recoverable font/structure problems as warnings; the ingest summary already
    # says which files failed, so keep them off the terminal unless -v is given.
    logging.getLogger("pypdf").setLevel(logging.WARNING if verbose else logging.ERROR)
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, format="rag: %(message)s")
    else:  # one-time preparations (the generator's first load on a machine) are said even without -v
        setup = logging.getLogger("rag.setup")
        if not any(isinstance(h, _NoticeHandler) for h in setup.handlers):
            setup.addHandler(_NoticeHandler())


class _NoticeHandler(logging.Handler):
    """Writes ``rag.setup`` notices to the current stderr as ``rag: message``."""

    def emit(self, record) -> None:
        click.echo(f"rag: {record.getMessage()}", err=True)


index_option = click.option("--index", default=DEFAULT_INDEX, show_default=True, help="Index folder.")


# ---- ingest ---------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True)
@index_option
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--hidden", is_flag=True, help="Also walk hidden files and folders.")
@click.option("--sync", is_flag=True, help="Also remove indexed files under PATHS that no longer exist.")
@click.option("--no-dedup", is_flag=True, help="Keep exact and near-duplicate documents and chunks.")
@click.option("--acl", multiple=True, help="Access group for every document of this run (repeatable).")
@_ops.tag_option
@click.option("--redact", default="", help="PII to replace before indexing: comma list of emails,phones,cards.")
@click.option("--wait", "wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for another writer.")
@click.option("--id-field", default=None, help="Record id field for csv/jsonl/json.")
@click.option("--title-field", default=None, help="Record title field for csv/jsonl/json.")
@click.option("--text-field", default=None, help="Record text field for csv/jsonl/json.")
@click.option("--metadata-field", multiple=True, help="Record field copied into metadata (repeatable).")
@click.option("--max-file-mb", type=float, default=50.0, show_default=True, help="Skip files larger than this.")
@click.option("--chunk-size", type=int, default=None, help="Chunk size in embedder word pieces.")
@click.option("--chunk-overlap", type=int, default=None, help="Chunk overlap in word pieces.")
@click.option("--embedder", default=None, help="Sentence-transformers folder or name (default: packaged all-MiniLM-L6-v2).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def ingest(ctx, paths, index, include, exclude, hidden, sync, no_dedup, acl, tags, redact, wait_s, id_field, title_field,
           text_field, metadata_field, max_file_mb, chunk_size, chunk_overlap, embedder, as_json):
    """Load, chunk, deduplicate, embed and index PATHS (files or folders)."""
    from .loaders import LoaderOptions

    tag_map = _ops.parse_tag_option(tags)

    missing = [p for p in paths if not os.path.exists(p)]
    if missing and len(missing) == len(paths):  # nothing to ingest: fail before creating an index
        _fail(f"{missing[0]}: no such file or directory" + (f" (and {len(missing) - 1} more path(s))" if len(missing) > 1 else ""))
    kinds = [k.strip() for k in redact.split(",") if k.strip()]
    bad = [k for k in kinds if k not in ("emails", "phones", "cards")]
    if bad:
        raise click.BadParameter(f"unknown kind {bad[0]!r} (choose from emails, phones, cards)", param_hint="--redact")
    overrides = {"chunking": {"chunk_size_tokens": chunk_size, "chunk_overlap_tokens": chunk_overlap},
                 "embedding": {"model": embedder}, "dedup": {"enabled": False if no_dedup else None}}
    rag = _open(ctx, index, overrides, create=True)
    if no_dedup:
        rag.config = rag.config.updated({"dedup": {"enabled": False}})
    opts = LoaderOptions(include=tuple(include), exclude=tuple(exclude), include_hidden=hidden,
                         max_file_bytes=int(max_file_mb * 2**20), id_field=id_field, title_field=title_field,
                         text_field=text_field, metadata_fields=tuple(metadata_field))
    progress = _progress_bar() if (sys.stderr.isatty() and not as_json) else None
    try:
        report = rag.ingest(list(paths), sync=sync, acl=list(acl), redact=kinds, loader_options=opts, wait_s=wait_s,
                            progress=progress, tags=tag_map)
    finally:
        if progress:
            progress.close()
    if as_json:
        _emit_json(report.to_dict())
    else:
        _print_ingest(report)
    if report.failed:
        sys.exit(1)


class _progress_bar:
    """tqdm bars on stderr, one per stage."""

    def __init__(self):
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit={"embedding": "chunk", "questions": "question", "out-of-domain": "question"}.get(stage, "file"),
                                          file=sys.stderr, leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _print_ingest(r) -> None:
    from .pipeline import display_source

    if r.skipped:
        click.echo(f"Skipped {len(r.skipped)} file(s):")
        for s in r.skipped:
            click.echo(f"  {display_source(s['source'])}: {s['reason']}")
    docs_dups = [d for d in r.duplicates if d["level"] == "document"]
    chunk_dups = [d for d in r.duplicates if d["level"] == "chunk"]
    for d in docs_dups:
        click.echo(f"  duplicate ({d['kind']}, {d['similarity']:.2f}): {display_source(d['key'])} ~ kept {display_source(d['kept_key'])}")
    if r.files_removed:
        click.echo(f"Removed {len(r.files_removed)} file(s) from the index:")
        for s in r.files_removed:
            click.echo(f"  {display_source(s)}")
    if not r.changed and r.files_seen and not r.failed:
        state = "finished, nothing changed"
    elif r.failed:
        state = "every file failed"
    elif r.files_seen == 0:
        state = "no documents found"
    else:
        state = "ok"
    click.echo(
        f"Ingest {state}: {r.files_seen} file(s) seen, {r.files_ingested} ingested, {r.files_unchanged} unchanged, "
        f"{len(r.skipped)} skipped; {r.documents} document(s), {r.chunks_added} chunk(s) added "
        f"({r.chunks_embedded} embedded, {r.chunks_from_cache} from cache), {r.chunks_removed} removed; "
        f"{len(docs_dups)} duplicate document(s) and {len(chunk_dups)} duplicate chunk(s) kept as aliases; "
        + (f"{len(r.revived)} alias(es) restored; " if r.revived else "")
        + (f"{r.truncated} chunk title(s) cut to the embedder's limit; " if r.truncated else "")
        + f"index {r.index_dir}: {r.total_documents} documents, {r.total_chunks} chunks; {r.seconds:.1f} s"
        + (f" (commit {r.commit_seconds:.2f} s)" if r.changed else ""))


# ---- search / ask ---------------------------------------------------------------------------
filter_option = click.option("--filter", "filters", multiple=True,
                             help="KEY=VALUE metadata filter, e.g. source='docs/*.md' (repeatable, AND).")
as_option = click.option("--as", "groups", multiple=True, help="Caller's access group (repeatable).")


@cli.command()
@click.argument("query")
@index_option
@click.option("--mode", type=click.Choice(["hybrid", "dense", "bm25"]), default=None, help="Retriever (default hybrid).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--fusion", type=click.Choice(["rrf", "convex"]), default=None, help="Hybrid fusion method.")
@click.option("--rerank", default=None, help="Cross-encoder folder or name to rerank the fused top-N.")
@filter_option
@as_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--at", "at_gen", type=int, default=None, help="Search kept generation GEN (see rag versions).")
@click.pass_context
def search(ctx, query, index, mode, top_k, fusion, rerank, filters, groups, as_json, at_gen):
    """Print the chunks that best match QUERY, with score, source and snippet."""
    from .cli_ops import pin_generation
    from .embedding import use_numpy_for_first_query
    from .pipeline import display_source

    if ctx.obj.get("one_shot"):  # the rag executable: one query, then exit
        use_numpy_for_first_query()

    flt = _parse_filters(filters)  # a bad flag is reported before the index is opened
    rag = pin_generation(_open(ctx, index, {"retrieval": {"fusion": fusion, "reranker": rerank}}), at_gen)
    res = rag.search_result(query, top_k=top_k, mode=mode, filters=flt, principals=_principals(groups))
    hits = list(res.hits)
    if as_json:
        _emit_json({"query": query, "mode": mode or rag.config.retrieval.mode, "generation": res.generation,
                    "hits": [_hit_json(h) for h in hits], "timings": res.timings})
        return READ_ONLY_DONE
    if not hits:
        click.echo("No matching chunks.")
    for h in hits:
        c = h.chunk
        where = display_source(c.source)
        if c.metadata.get("record_id"):
            where += f"#{c.metadata['record_id']}"
        if c.page:
            where += f" p.{c.page}"
        if c.heading_path:
            where += " > " + " > ".join(c.heading_path)
        snippet = " ".join(c.text.split())[:200]
        click.echo(f"{h.rank:>2}. {h.score:.4f}  {where}" + (f"  [{c.title}]" if c.title else ""))
        click.echo(f"    {snippet}")
    return READ_ONLY_DONE


def _hit_json(h) -> dict[str, Any]:
    from .pipeline import display_source

    c = h.chunk
    return {"rank": h.rank, "score": h.score, "chunk_id": c.id, "doc_id": c.doc_id, "source": display_source(c.source),
            "title": c.title, "page": c.page, "heading_path": list(c.heading_path), "start": c.start, "end": c.end,
            "dense_score": h.dense_score, "dense_rank": h.dense_rank, "sparse_score": h.sparse_score,
            "sparse_rank": h.sparse_rank, "rerank_score": h.rerank_score, "metadata": c.metadata, "text": c.text}


def _gen_overrides(generator, model, max_new_tokens, temperature, seed, base_url):
    return {"generation": {"backend": generator, "model": model, "max_new_tokens": max_new_tokens,
                           "temperature": temperature, "seed": seed, "base_url": base_url}}


generation_options = [
    click.option("--generator", type=click.Choice(["transformers", "extractive", "openai"]), default=None,
                 help="Generator backend (default transformers: SmolLM2-135M-Instruct)."),
    click.option("--model", default=None, help="Generator model folder, HF name, or endpoint model name."),
    click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1."),
    click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=None),
    click.option("--temperature", type=click.FloatRange(0, 5), default=None),
    click.option("--seed", type=int, default=None),
]


def _with_generation(f):
    for opt in reversed(generation_options):
        f = opt(f)
    return f


@cli.command()
@click.argument("question")
@index_option
@click.option("--top-k", type=click.IntRange(1, 100), default=None, help="Chunks retrieved for the answer.")
@filter_option
@as_option
@_with_generation
@click.option("--no-stream", is_flag=True, help="Print the answer only when complete.")
@click.option("--json", "as_json", is_flag=True, help="Print {question, answer, citations, hits, timings}.")
@_ops.record_options
@click.pass_context
def ask(ctx, question, index, top_k, filters, groups, generator, model, base_url, max_new_tokens, temperature, seed,
        no_stream, as_json, user_id, session_id, records_path, no_record, at_gen):
    """Answer QUESTION from the indexed documents, citing them as [n]; the answer is recorded."""
    from .cli_ops import pin_generation, record_cli_answer

    kw = dict(top_k=top_k, filters=_parse_filters(filters), principals=_principals(groups))
    rag = pin_generation(_open(ctx, index, _gen_overrides(generator, model, max_new_tokens, temperature, seed, base_url)),
                         at_gen)
    rec_kw = dict(user_id=user_id, session_id=session_id, records_path=records_path)
    if as_json:
        ans = rag.ask(question, **kw)
        rec = None if no_record else record_cli_answer(ctx, rag, ans, **rec_kw)
        _emit_json(dict(_answer_json(ans), record_id=rec["record_id"] if rec else None))
        return
    ans = _stream_answer(rag, question, no_stream, **kw)
    _print_citations(ans)
    if not no_record:
        record_cli_answer(ctx, rag, ans, **rec_kw)


def _stream_answer(rag, question, no_stream=False, **kw):
    from .types import Answer

    if no_stream:
        ans = rag.ask(question, **kw)
        click.echo(ans.text)
        return ans
    ans = None
    for piece in rag.stream(question, **kw):
        if isinstance(piece, Answer):
            ans = piece
        else:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    click.echo("")
    return ans


def _answer_json(ans) -> dict[str, Any]:
    from .pipeline import display_source

    d = ans.to_dict()
    d["hits"] = [_hit_json(h) for h in ans.hits]
    for c in d["citations"]:
        c["source"] = display_source(c["source"])
    return d


def _print_citations(ans) -> None:
    from .pipeline import display_source

    if ans is None or not ans.citations:
        return
    click.echo("\nSources:")
    for c in ans.citations:
        where = display_source(c.source)
        chunk = next((h.chunk for h in ans.hits if h.chunk.id == c.chunk_id), None)
        if chunk is not None and chunk.metadata.get("record_id"):
            where += f" (id {chunk.metadata['record_id']})"
        if c.page:
            where += f", p. {c.page}"
        title = f" — {c.title}" if c.title else ""
        click.echo(f"[{c.n}] {where}{title}")
        if c.quote:
            q = " ".join(c.quote.split())
            click.echo(f"    \"{q[:240]}{'…' if len(q) > 240 else ''}\"")
    if ans.dropped_markers:
        click.echo(f"(dropped citation markers that point at no source: {', '.join(f'[{n}]' for n in ans.dropped_markers)})")


# ---- index management: info, delete, verify, repair (rag/cli_index.py) ----------------------
def _human(n: int) -> str:
    """Bytes as B / KB / MB / GB (1024-based), one decimal above bytes."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


from . import cli_index as _index_cmds  # noqa: E402 - registers on the group defined above

_index_cmds.register(cli)


from . import cli_eval as _eval_cmds  # noqa: E402 - registers on the group defined above

_eval_cmds.register(cli)


# ---- integrations ---------------------------------------------------------------------------
@cli.command("mcp")
@index_option
@as_option
@_with_generation
@click.pass_context
def mcp_cmd(ctx, index, groups, generator, model, base_url, max_new_tokens, temperature, seed):
    """Serve search and ask to MCP clients over stdio (needs rag[mcp]); --as fixes the access groups."""
    from .integrations.mcp import serve  # MissingExtraError (one line) without the mcp extra

    rag = _open(ctx, index, _gen_overrides(generator, model, max_new_tokens, temperature, seed, base_url))
    serve(rag, principals=_principals(groups))


# ---- operating: chat, feedback, history, stats (rag/cli_ops.py) ------------------------------
_ops.register(cli)  # needs the helpers above

# ---- serve (rag/server/; FastAPI and uvicorn load only when it runs) --------------------------
from .server.cli import serve as _serve  # noqa: E402

cli.add_command(_serve)


# ---- migrate (rag/migrate.py) ------------------------------------------------------------------
@cli.command("migrate")
@click.option("--from", "src", required=True, help="Index to copy: a folder or a Qdrant location.")
@click.option("--to", "dst", required=True,
              help="Empty target: a folder, qdrant+local:PATH, qdrant://HOST[:PORT]/COLLECTION or qdrants://...")
@click.option("--wait", "wait_s", type=float, default=0.0, show_default=True, help="Seconds to wait for another writer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def migrate_cmd(ctx, src, dst, wait_s, as_json):
    """Move an index between backends with its stored vectors (nothing is re-embedded)."""
    from .migrate import migrate

    r = migrate(src, dst, _config(ctx)[0], wait_s=wait_s)
    if as_json:
        _emit_json(r)
        return
    click.echo(f"Migrated {r['from']} -> {r['to']}: {r['documents']} documents (+{r['aliases']} aliases), {r['files']} files, "
               f"{r['chunks']} chunks with their {r['dim']}-dim vectors (chunk ids {'kept' if r['ids_kept'] else 'renumbered'}); "
               f"generation {r['generation']}; {r['seconds']:.1f} s")


READ_ONLY_DONE = object()
"""What a command returns when it only read (the index, the models) and has written all its
output: the console entry point may then end the process without interpreter teardown."""


def _exit_without_teardown() -> None:
    """Flush stdout and stderr and end the process with status 0 at once (``os._exit``).

    Interpreter shutdown frees every module, numpy's and the tokenizer's memory and joins idle
    worker threads: 30-60 ms of a 0.3 s cold ``rag search`` on this 2-core machine
    (``benchmarks/cold_start.py``). Only for a finished read-only command (:data:`READ_ONLY_DONE`):
    it left no file to write, no lock to release (the OS drops flocks with the process) and no
    background work; atexit handlers do not run."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # the reader went away (rag search | head): nothing left to say
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the click group, turning RagError into one-line errors.
    Called without ``argv`` (the ``rag`` executable, one command per process), ``rag search``
    embeds its query on the numpy pass (:func:`rag.embedding.use_numpy_for_first_query`) and a
    read-only command that succeeded ends the process without interpreter teardown
    (:func:`_exit_without_teardown`); called with ``argv`` (in-process), neither."""
    from .errors import RagError

    try:
        result = cli.main(args=argv, prog_name="rag", standalone_mode=False, obj={"one_shot": argv is None})
        if result is READ_ONLY_DONE and argv is None:
            _exit_without_teardown()
    except click.exceptions.Abort:
        click.echo("rag: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line instead of click's usage block
        where = e.ctx.command_path if e.ctx is not None else "rag"
        click.echo(f"rag: error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except RagError as e:
        if os.environ.get("RAG_DEBUG"):
            raise
        click.echo(f"rag: error: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("rag: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:  # a path the user named cannot be used (no permission, a read-only or missing parent)
        if os.environ.get("RAG_DEBUG"):
            raise
        if e.filename:
            click.echo(f"rag: error: {e.filename}: {e.strerror or e.__class__.__name__}", err=True)
        else:
            click.echo(f"rag: internal error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                       "(set RAG_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - last resort: still one line, with a hint
        if os.environ.get("RAG_DEBUG"):
            raise
        click.echo(f"rag: internal error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                   "(set RAG_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
