"""``rag eval retrieval`` and ``rag eval qa``: evaluation commands, registered on the click group
of :mod:`rag.cli` (which owns parsing helpers and output rules: one-line errors, ``--json``)."""

from __future__ import annotations

import sys

import click


def register(cli: click.Group) -> None:
    """Add the ``eval`` group (retrieval, qa) to ``cli``."""
    from . import cli as c

    @cli.group("eval")
    def eval_group():
        """Measure retrieval (BEIR) or answer quality (QA sets)."""


    @eval_group.command("retrieval")
    @click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
    @click.option("--index", default=None, help="Existing index of the corpus (default: build or reuse indexes/eval/<dataset>-<settings hash>).")
    @click.option("--modes", default="bm25,dense,hybrid", show_default=True)
    @click.option("--split", default="test", show_default=True)
    @click.option("--fusion", type=click.Choice(["rrf", "convex"]), default=None)
    @click.option("--alpha", type=click.FloatRange(0, 1), default=None, help="Dense weight for convex fusion.")
    @click.option("--limit", type=int, default=None, help="Evaluate only the first N queries.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def eval_retrieval_cmd(ctx, dataset_dir, index, modes, split, fusion, alpha, limit, as_json):
        """nDCG@10, Recall@10/100, MRR@10 and latency for each mode on a BEIR folder."""
        from .eval_retrieval import evaluate_retrieval, format_table

        modes_l = [m.strip() for m in modes.split(",") if m.strip()]
        for m in modes_l:
            if m not in ("bm25", "dense", "hybrid"):
                raise click.BadParameter(f"unknown mode {m!r}", param_hint="--modes")
        cfg, _ = c._config(ctx, {"retrieval": {"fusion": fusion, "alpha": alpha}})
        progress = c._progress_bar() if (sys.stderr.isatty() and not as_json) else None
        res = evaluate_retrieval(dataset_dir, index_dir=index, modes=modes_l, split=split, config=cfg, limit=limit,
                                 progress=progress)
        if progress:
            progress.close()
        if as_json:
            c._emit_json(res)
        else:
            click.echo(format_table(res))


    @eval_group.command("qa")
    @click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
    @click.option("--index", default=None, help="Existing index of passages.jsonl (default: build or reuse indexes/eval/<dataset>-<settings hash>).")
    @click.option("--limit", type=int, default=None, help="Evaluate only the first N questions.")
    @click.option("--ood", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="queries.jsonl of out-of-domain questions for abstention (default: SciFact beside the dataset, if present).")
    @click.option("--ood-limit", type=int, default=100, show_default=True)
    @click.option("--split", type=click.Choice(["all", "dev", "test"]), default="all", show_default=True,
                  help="dev/test: questions whose gold passage is at an odd/even position (tune on dev, report on test).")
    @c._with_generation
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def eval_qa_cmd(ctx, dataset_dir, index, limit, ood, ood_limit, split, generator, model, base_url, max_new_tokens, temperature,
                    seed, as_json):
        """Exact match, F1, citation precision, abstention and latency on a QA set."""
        from .eval_qa import run_eval_qa

        cfg, _ = c._config(ctx, c._gen_overrides(generator, model, max_new_tokens, temperature, seed, base_url))
        progress = c._progress_bar() if sys.stderr.isatty() else None  # stderr: --json output stays clean
        try:
            res = run_eval_qa(dataset_dir, index_dir=index, config=cfg, limit=limit, ood_path=ood, ood_limit=ood_limit,
                              split=split, progress=progress)
        finally:
            if progress:
                progress.close()
        if as_json:
            c._emit_json(res)
        else:
            for k, v in res.items():
                if not isinstance(v, (dict, list)):
                    click.echo(f"{k:>28}: {v:.4f}" if isinstance(v, float) else f"{k:>28}: {v}")
