"""``rag info``, ``rag delete``, ``rag verify``, ``rag repair`` and ``rag optimize``: index management commands,
registered on the click group of :mod:`rag.cli` (which owns parsing helpers and output rules:
one-line errors, ``--json``)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add info, delete, verify, repair and optimize to ``cli``."""
    from . import cli as c

    @cli.command()
    @c.index_option
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def info(ctx, index, as_json):
        """Show documents, chunks, sources by type, embedder, sizes on disk and last update."""
        rag = c._open(ctx, index)
        inf = rag.info()
        inf.update(c._ops.ops_info(rag, index))  # tags, kept generations
        if as_json:
            c._emit_json(inf)
            return
        click.echo(f"Index {inf['index']} (format {inf['format_version']}, generation {inf['generation']})")
        click.echo(f"  files: {inf['files']}  documents: {inf['documents']}  chunks: {inf['chunks']}  "
                   f"duplicate documents: {inf['duplicate_documents']}")
        click.echo("  documents by type: " + (", ".join(f"{k} {v}" for k, v in inf["documents_by_type"].items()) or "none"))
        e = inf["embedder"]
        click.echo(f"  embedder: {e.get('name')} ({e.get('model_id')}, dim {e.get('dim')}); dense index: {inf['dense_index']}")
        if isinstance(inf.get("segments"), int) and inf["segments"]:  # local index of segments (docs/segments.md)
            click.echo(f"  segments: {inf['segments']} ({inf.get('tombstones', 0)} deleted chunks awaiting a merge)")
        click.echo("  size on disk: " + ", ".join(f"{k} {c._human(v)}" for k, v in inf["sizes_bytes"].items())
                   + f"; total {c._human(inf['total_bytes'])}")
        click.echo(f"  created {inf['created']}, last update {inf['updated']}")
        for line in c._ops.ops_info_lines(inf):
            click.echo(line)


    @cli.command()
    @click.argument("sources", nargs=-1, required=True)
    @c.index_option
    @click.option("--wait", "wait_s", type=float, default=0.0)
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def delete(ctx, sources, index, wait_s, as_json):
        """Remove the documents of SOURCES (file paths, folders or globs) from the index."""
        rag = c._open(ctx, index)
        r = rag.delete(list(sources), wait_s=wait_s)
        if as_json:
            c._emit_json(r.to_dict())
            return
        if not r.files_removed:
            c._fail(f"no indexed source matches {', '.join(sources)}")
        click.echo(f"Removed {len(r.files_removed)} source(s), {r.chunks_removed} chunk(s); index now has "
                   f"{r.total_documents} documents, {r.total_chunks} chunks.")


    @cli.command()
    @c.index_option
    @click.option("--at", "at_gen", type=int, default=None, help="Check kept generation GEN instead of the current one.")
    @click.option("--repair", "then_repair", is_flag=True,
                  help="If the check fails, rebuild what can be rebuilt (as `rag repair` does).")
    @click.pass_context
    def verify(ctx, index, at_gen, then_repair):
        """Check every file's checksum and that docstore, FAISS and BM25 agree."""
        from .errors import IndexFormatError
        from .index.versions import verify_generation
        from .pipeline import RAG

        if then_repair and at_gen is not None:
            raise click.UsageError("--repair repairs the current generation; it cannot be combined with --at", ctx=ctx)
        try:
            res = verify_generation(index, at_gen) if at_gen is not None else RAG(index).verify()
        except IndexFormatError as e:
            if not then_repair:
                raise
            click.echo(f"rag: {e}; repairing", err=True)
            ctx.invoke(repair, index=index, wait_s=0.0)
            return
        click.echo(f"Index {res['index']} is consistent: generation {res['generation']}, {res['documents']} documents, "
                   f"{res['chunks']} chunks.")


    @cli.command()
    @c.index_option
    @click.option("--wait", "wait_s", type=float, default=0.0)
    @click.pass_context
    def repair(ctx, index, wait_s):
        """Rebuild derived files (FAISS from stored vectors, BM25 from the docstore)."""
        from .pipeline import RAG

        res = RAG(index).repair(wait_s=wait_s)
        click.echo(f"Repaired {res['index']}: generation {res['generation']}, {res['chunks']} chunks.")

    @cli.command()
    @c.index_option
    @click.option("--wait", "wait_s", type=float, default=0.0)
    @click.pass_context
    def optimize(ctx, index, wait_s):
        """Merge every segment into one, tombstones purged (a local index; what repair rebuilds)."""
        from .pipeline import RAG

        res = RAG(index).repair(wait_s=wait_s)
        click.echo(f"Optimized {res['index']}: generation {res['generation']}, one segment of {res['chunks']} chunks.")
