"""Operating commands of the ``rag`` CLI: ``chat``, ``feedback``, ``history``, ``stats``,
``versions``, ``rollback``.

Registered on the click group by :mod:`rag.cli` (``register(cli)``); thin like the rest of the
CLI: parse, call :mod:`rag.records` / :mod:`rag.stats` / :mod:`rag.conversation`, print.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

records_option = click.option("--records", "records_path", type=click.Path(dir_okay=False), default=None,
                              help="Conversation records file (default: config records.path, else <index>/records.sqlite).")


def _cli():
    from . import cli as c

    return c


def _configured_records(ctx: click.Context, records_path: str | None) -> str | None:
    if records_path:
        return records_path
    cfg, _ = _cli()._config(ctx)
    return cfg.records.path


def open_records(ctx: click.Context, index: str, records_path: str | None, *, create: bool):
    """The RecordStore for INDEX. ``create=False`` (feedback, history, stats): a one-line error,
    and nothing created, when no record has been written for INDEX yet."""
    from .index import is_remote_location
    from .records import RecordStore, find_records, records_path as resolve

    path = _configured_records(ctx, records_path)
    location = index
    if is_remote_location(index):  # a Qdrant location: records live in its side folder, as RAG keeps them
        from .index import open_index

        index = str(open_index(index, _cli()._config(ctx)[0]).side_dir)
    if create:
        return RecordStore(resolve(index, path))
    found = find_records(index, path)
    if found is None:
        where = path or location
        _cli()._fail(f"{where}: no conversation sessions here (no records yet; `rag ask` / `rag chat --index {location}` "
                     "write them; pass the index or --records file they used)")
    return RecordStore(found)


def default_user(store, user_id: str | None, session_id: str | None) -> str:
    """The user a CLI record is written for: ``user_id`` when given, else the user of the named
    session when it exists, else :data:`rag.records.LOCAL_USER`."""
    from .records import LOCAL_USER

    if user_id is not None:
        return user_id
    known = store.session(session_id) if session_id else None
    return (known or {}).get("user_id") or LOCAL_USER


def record_cli_answer(ctx, rag, ans, *, user_id, session_id, records_path) -> dict[str, Any] | None:
    """Write the record of a `rag ask`; a failure is one warning line (the answer was given).
    ``user_id`` None: the user of the named session when it exists, else
    :data:`rag.records.LOCAL_USER`; ``session_id`` None: the user's session of the day
    (:func:`rag.records.daily_session`), so `rag history` lists it and `--forget-user` reaches it."""
    from .conversation import record_answer
    from .errors import RagError
    from .records import daily_session

    if ans is None:
        return None
    try:
        store = open_records(ctx, str(rag.index_dir), records_path, create=True)
        user_id = default_user(store, user_id, session_id)
        session_id = session_id or daily_session(user_id)
        return record_answer(store, rag, ans, user_id=user_id, session_id=session_id)
    except RagError as e:
        click.echo(f"rag: warning: answer not recorded: {e}", err=True)
        return None


def record_options(f):
    """``rag ask``'s --user, --session, --records, --no-record and --at options."""
    for opt in reversed([
        click.option("--user", "user_id", default=None,
                     help="User id written to the answer's record (default: local, the user `rag serve` "
                          "without API keys records)."),
        click.option("--session", "session_id", default=None,
                     help="Record the answer as the next turn of this session (default: ask-USER-YYYY-MM-DD, "
                          "one per user and UTC day; its turns are not used as history)."),
        records_option,
        click.option("--no-record", is_flag=True, help="Do not write a conversation record."),
        click.option("--at", "at_gen", type=int, default=None, help="Answer from kept generation GEN (see rag versions)."),
    ]):
        f = opt(f)
    return f


tag_option = click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
                          help="Metadata for every document of this run, e.g. kind=synthetic (repeatable; "
                               "see [retrieval] exclude_tags).")


def parse_tag_option(tags) -> dict[str, Any]:
    """``--tag`` values -> ``{key: value}`` (:func:`rag.tags.parse_tags`); a bad one is a usage error."""
    from .errors import ConfigError
    from .tags import parse_tags

    try:
        return parse_tags(tags)
    except ConfigError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], param_hint="--tag") from None


def ops_info(rag, index: str) -> dict[str, Any]:
    """``rag info`` additions: ``documents_by_tag`` and, for a local folder, ``generations_kept``."""
    import os

    from .tags import tag_counts

    out: dict[str, Any] = {}
    with rag.lease() as reader:
        out["documents_by_tag"] = tag_counts(reader.documents())
    if os.path.isdir(index):
        from .index.versions import disk_usage

        out["generations_kept"] = disk_usage(index)
    return out


def ops_info_lines(inf: dict[str, Any]) -> list[str]:
    """The text lines of :func:`ops_info`'s figures."""
    lines = []
    if inf.get("documents_by_tag"):
        lines.append("  documents by tag: " + ", ".join(f"{k} {v}" for k, v in inf["documents_by_tag"].items()))
    g = inf.get("generations_kept")
    if g is not None:
        lines.append(f"  generations kept: {g['generations']} ({_cli()._human(g['bytes'])} on disk; rag versions lists them)")
    return lines


def _local_only(index: str) -> None:
    from .index import is_remote_location

    if is_remote_location(index):
        _cli()._fail(f"{index}: generations are kept by the local index folder only (this is a Qdrant location)")


def pin_generation(rag, at: int | None):
    """``--at GEN``: make ``rag`` read kept generation GEN (:func:`rag.index.versions.pin`)."""
    if at is None:
        return rag
    _local_only(rag.location)
    from .index.versions import pin

    return pin(rag, at)


def _changes_text(ch) -> str:
    if ch is None:
        return "-"
    return f"+{len(ch['added'])} ~{len(ch['changed'])} -{len(ch['removed'])}"


def register(cli: click.Group) -> None:
    """Add chat, feedback, history, stats, versions and rollback to ``cli``."""
    c = _cli()

    @cli.command()
    @c.index_option
    @click.option("--session", "session_id", default=None, help="Resume this session id.")
    @click.option("--user", "user_id", default=None,
                  help="User id recorded with the session (default: the resumed session's user, else local).")
    @click.option("--top-k", type=click.IntRange(1, 100), default=None)
    @c.filter_option
    @c.as_option
    @records_option
    @c._with_generation
    @click.pass_context
    def chat(ctx, index, session_id, user_id, top_k, filters, groups, records_path, generator, model, base_url,
             max_new_tokens, temperature, seed):
        """Interactive conversation; follow-up questions use the history. Empty line or Ctrl-D ends."""
        from .conversation import Conversation
        from .types import Answer

        flt = c._parse_filters(filters)
        rag = c._open(ctx, index, c._gen_overrides(generator, model, max_new_tokens, temperature, seed, base_url))
        store = open_records(ctx, index, records_path, create=True)
        user_id = default_user(store, user_id, session_id)
        conv = Conversation(rag, session_id=session_id, user_id=user_id, top_k=top_k, filters=flt,
                            principals=c._principals(groups), store=store)
        click.echo(f"Session {conv.session_id}. Ask a question (empty line to quit).")
        while True:
            try:
                q = click.prompt("you", default="", show_default=False, prompt_suffix="> ")
            except (EOFError, click.Abort):
                break
            if not q.strip():
                break
            click.echo("rag> ", nl=False)
            ans = None
            for piece in conv.stream(q):
                if isinstance(piece, Answer):
                    ans = piece
                else:
                    click.echo(piece, nl=False)
            click.echo("")
            c._print_citations(ans)
        click.echo(f"Session {conv.session_id} saved.")

    @cli.command(context_settings={"ignore_unknown_options": False})
    @click.argument("args", nargs=-1, required=True, metavar="[SESSION_ID TURN] up|down")
    @c.index_option
    @click.option("--record", "record_id", type=int, default=None, help="Rate this record id (e.g. of a `rag ask`).")
    @click.option("--note", default=None)
    @records_option
    @click.pass_context
    def feedback(ctx, args, index, record_id, note, records_path):
        """Rate TURN of SESSION_ID (or --record ID) up or down."""
        want = 1 if record_id is not None else 3
        if len(args) != want or args[-1] not in ("up", "down"):
            raise click.UsageError("expected SESSION_ID TURN up|down, or --record ID up|down")
        if record_id is None and not args[1].isdigit():
            raise click.BadParameter(f"{args[1]!r} is not a turn number", param_hint="TURN")
        store = open_records(ctx, index, records_path, create=False)
        rating = args[-1]
        if record_id is not None:
            store.set_feedback(None, None, rating, note, record_id=record_id)
            click.echo(f"Feedback {rating} recorded for record {record_id}.")
        else:
            store.set_feedback(args[0], int(args[1]), rating, note)
            click.echo(f"Feedback {rating} recorded for session {args[0]}, turn {args[1]}.")

    @cli.command()
    @c.index_option
    @click.option("--session", "session_id", default=None)
    @click.option("--user", "user_id", default=None)
    @click.option("--export", "export_path", type=click.Path(dir_okay=False), default=None,
                  help="Write records as JSONL.")
    @click.option("--anonymise", is_flag=True,
                  help="With --export: salted-hash user ids, PII redacted from question, query, answer and note.")
    @click.option("--salt", default=None, help="Salt for --anonymise (default: one stored in the records file).")
    @click.option("--forget-user", "forget_user", default=None, metavar="ID",
                  help="Delete every record, session and feedback of this user.")
    @records_option
    @click.pass_context
    def history(ctx, index, session_id, user_id, export_path, anonymise, salt, forget_user, records_path):
        """List conversation sessions, export records as JSONL, or erase a user."""
        if anonymise and not export_path:
            raise click.UsageError("--anonymise needs --export FILE")
        store = open_records(ctx, index, records_path, create=False)
        if forget_user is not None:
            n = store.forget_user(forget_user)
            click.echo(f"Forgot user {forget_user}: {n['records']} record(s), {n['sessions']} session(s), "
                       f"{n['feedback']} feedback rating(s) deleted from {store.path}.")
            return
        if export_path or session_id:
            rows = store.export(store.records(session_id=session_id, user_id=user_id), anonymise=anonymise, salt=salt)
            lines = [json.dumps(r, ensure_ascii=False) for r in rows]
            if export_path:
                with open(export_path, "w", encoding="utf-8") as f:
                    f.write("\n".join(lines) + ("\n" if lines else ""))
                click.echo(f"Exported {len(lines)} record(s) to {export_path}" + (" (anonymised)." if anonymise else "."))
            else:
                for line in lines:
                    click.echo(line)
            return
        sessions = store.sessions(user_id=user_id)
        if not sessions:
            click.echo("No sessions.")
        for s in sessions:
            click.echo(f"{s['session_id']}  user={s['user_id'] or '-'}  turns={s['turns']}  started={s['created']}  "
                       f"last={s['updated']}")

    @cli.command()
    @c.index_option
    @click.option("--since", default=None, metavar="DATE", help="Only records from this UTC date (YYYY-MM-DD) or time on.")
    @click.option("--user", "user_id", default=None, help="Only this user's records.")
    @click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
    @click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
                  help="Write one self-contained HTML page with plots instead of the text report "
                       "(prints one line: where it went, with the headline counts).")
    @click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Rows in each top list.")
    @records_option
    @click.pass_context
    def stats(ctx, index, since, user_id, as_json, html_path, top, records_path):
        """Usage over time: questions per day, abstention, feedback, latency, cited and never-cited documents."""
        from . import stats as st
        from .errors import ConfigError

        try:
            st.parse_since(since) if since else None
        except ConfigError as e:
            raise click.BadParameter(str(e).split(": ", 1)[-1], param_hint="--since") from None
        store = open_records(ctx, index, records_path, create=False)
        res = st.stats_for_index(index, store, since=since, user_id=user_id, top=top)
        if html_path:
            try:
                with open(html_path, "w", encoding="utf-8") as f:
                    f.write(st.render_stats_html(res, title=f"rag stats: {index}", top=top))
            except OSError as e:
                c._fail(f"{html_path}: cannot write the page ({e.strerror or e})")
        if as_json:
            c._emit_json(res)
        elif html_path:
            click.echo(f"Wrote {html_path}: {res['questions']} question(s) from {res['users']} user(s) in "
                       f"{res['sessions']} session(s), {res['abstained']} abstained.")
        else:
            click.echo(st.format_table(res, top=top))

    @cli.command()
    @c.index_option
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--files", "show_files", is_flag=True, help="List the files each generation added, changed, removed.")
    def versions(index, as_json, show_files):
        """List the kept index generations: time, documents, chunks, files added/changed/removed."""
        from .index.versions import list_versions

        _local_only(index)
        vs = list_versions(index)
        if as_json:
            c._emit_json(vs)
            return
        click.echo(f"{'generation':>10}  {'committed (UTC)':<25}  {'documents':>9}  {'chunks':>7}  {'files +added ~changed -removed':<30}  disk")
        for v in vs:
            mark = " (current)" if v["current"] else ""
            note = f"  restored from {v['restored_from']}" if v["restored_from"] else ""
            click.echo(f"{v['generation']:>10}  {str(v['time'] or '-'):<25}  {v['documents'] if v['documents'] is not None else '-':>9}  "
                       f"{v['chunks'] if v['chunks'] is not None else '-':>7}  {_changes_text(v['changes']):<30}  "
                       f"{c._human(v['bytes'])}{mark}{note}")
            if show_files and v["changes"]:
                from .pipeline import display_source

                for kind, sign in (("added", "+"), ("changed", "~"), ("removed", "-")):
                    for f in v["changes"][kind]:
                        click.echo(f"{'':>12}{sign} {display_source(f)}")

    @cli.command()
    @click.argument("generation", type=int)
    @c.index_option
    @click.option("--wait", "wait_s", type=float, default=0.0, help="Seconds to wait for another writer.")
    @click.pass_context
    def rollback(ctx, generation, index, wait_s):
        """Make kept GENERATION current again (as a new generation; readers switch at once)."""
        from .index.versions import rollback as do_rollback

        _local_only(index)

        cfg, _ = c._config(ctx)
        m = do_rollback(index, generation, keep=cfg.index.keep_generations, wait_s=wait_s)
        click.echo(f"Restored generation {generation} as generation {m['generation']}: {m['counts']['documents']} documents, "
                   f"{m['counts']['chunks']} chunks.")
