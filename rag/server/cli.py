"""The ``rag serve`` command (click only at import; FastAPI and uvicorn load when it runs)."""

from __future__ import annotations

import ipaddress
import logging
import sys

import click



def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--index", default="indexes/default", show_default=True, help="Index folder (created by the first upload if missing).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs --api-keys.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--api-keys", "api_keys", type=click.Path(dir_okay=False), default=None,
              help="TOML file of API keys (sha256) -> user, groups, admin. Without it: 127.0.0.1 only, no auth.")
@click.option("--uploads", default=None, help="Folder for uploaded files (default <index>/uploads).")
@click.option("--max-upload-mb", type=click.FloatRange(0.001, 4096), default=50.0, show_default=True,
              help="Largest upload request.")
@click.option("--generation-slots", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Answers generated at once (others wait after their sources are sent); 1 suits a CPU.")
@click.option("--embedder", default=None, help="Embedder for a new index (an existing index keeps its own).")
@click.option("--generator", type=click.Choice(["transformers", "extractive", "openai"]), default=None,
              help="Generator backend (default transformers: SmolLM2-135M-Instruct).")
@click.option("--model", default=None, help="Generator model folder, HF name, or endpoint model name.")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for --generator openai.")
@click.option("--new-key", "new_key_user", metavar="USER", default=None,
              help="Print a new API key for USER and its keys-file entry, then exit.")
@click.option("--groups", multiple=True, help="With --new-key: the key's access groups (repeatable).")
@click.option("--admin", is_flag=True, help="With --new-key: an admin key.")
@click.pass_context
def serve(ctx, index, host, port, api_keys, uploads, max_upload_mb, generation_slots, embedder, generator, model,
          base_url, new_key_user, groups, admin):
    """Serve INDEX over HTTP: OpenAI-compatible chat completions with sources, search,
    document upload/list/delete, feedback, /health, /metrics and a web page at /."""
    from ..cli import _gen_overrides, _open
    from .auth import KeyStore, key_entry, new_key

    if new_key_user:
        key = new_key()
        entry = key_entry(key, new_key_user, groups, admin)  # ConfigError on a bad user or group name
        click.echo(f"API key (shown once; give it to {new_key_user}): {key}", err=True)
        click.echo(entry, nl=False)
        return
    if api_keys is None and not _is_loopback(host):
        raise click.UsageError(f"--host {host}: serving beyond this machine needs --api-keys FILE")
    keys = KeyStore.load(api_keys) if api_keys else KeyStore.local()
    if keys.is_local:
        click.echo("rag: warning: no --api-keys file: serving 127.0.0.1 only, without authentication "
                   "(every local user and process can read and change this index)", err=True)
    overrides = _gen_overrides(generator, model, None, None, None, base_url)
    overrides["embedding"] = {"model": embedder}
    rag = _open(ctx, index, overrides, create=True)
    if not rag.store.exists() and embedder:
        rag.config = rag.config.updated({"embedding": {"model": embedder}})
    from .app import create_app, run_server

    app = create_app(rag, keys, uploads_dir=uploads, max_upload_bytes=int(max_upload_mb * 2**20),
                     generation_slots=generation_slots)
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    click.echo(f"rag: serving {index} on http://{host if ':' not in host else f'[{host}]'}:{port} "
               f"({'keyless' if keys.is_local else f'{len(keys)} API key(s)'}); GET /health says when models are loaded",
               err=True)
    sys.stderr.flush()
    run_server(app, host, port, log_level="info" if verbose else "warning")
