"""API keys -> principals for ``rag serve``.

The keys file is TOML (data only, never executed)::

    [[keys]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256 hex of the key
    user = "alice"                # user id recorded with her sessions and uploads
    groups = ["eng", "support"]   # access groups: she sees public documents and these groups'
    admin = false                 # optional; an admin key's uploads take the groups it names

Only the sha256 of each key is stored, so the file is no secret by itself; ``rag serve
--new-key USER`` prints a fresh key and its entry. A presented key is hashed and compared
with every stored hash by :func:`hmac.compare_digest` (constant time, no early exit), so
timing does not reveal how much of a hash matched.

Why groups and not per-document grants: the index already enforces access groups inside
retrieval (:class:`rag.index.backend.Filter`), so a key's groups become the request's
principals and a key can never see, cite or quote another group's chunks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import read_toml
from ..errors import ConfigError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_KEY_FIELDS = {"sha256", "user", "groups", "admin"}


@dataclass(frozen=True)
class Principal:
    """Who a request runs as.

    ``user``: the user id (recorded with sessions and uploads). ``groups``: access groups,
    passed to retrieval as principals. ``admin``: uploads take the groups named in the request
    (public when none) instead of the key's own, and the admin may delete any document it can
    see. ``local``: the keyless loopback mode (see :meth:`KeyStore.local`); such a caller is
    the machine's own user and runs without access control, like the CLI.
    """

    user: str
    groups: tuple[str, ...] = ()
    admin: bool = False
    local: bool = False

    @property
    def principals(self) -> tuple[str, ...] | None:
        """The access groups for retrieval: a tuple for every key, None (no access control)
        only for the keyless loopback user."""
        return None if self.local else self.groups


def hash_key(key: str) -> str:
    """sha256 hex digest (64 lowercase hex chars) of an API key's UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key: 32 bytes from :mod:`secrets`, URL-safe base64 (43 chars)."""
    return "rag-" + secrets.token_urlsafe(32)


def key_entry(key: str, user: str, groups: Sequence[str] = (), admin: bool = False) -> str:
    """The ``[[keys]]`` TOML entry for ``key`` (its hash only). Raises ConfigError on a user
    or group name outside letters, digits, ``. _ @ -``."""
    for what, name in [("user", user), *(("group", g) for g in groups)]:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{what} {name!r}: use 1-64 letters, digits, . _ @ -")
    gs = ", ".join(f'"{g}"' for g in groups)
    return (f'[[keys]]\nsha256 = "{hash_key(key)}"\nuser = "{user}"\ngroups = [{gs}]\n'
            + ("admin = true\n" if admin else ""))


class KeyStore:
    """The API keys of one server. Build with :meth:`load` (a TOML file) or :meth:`local`."""

    def __init__(self, entries: Sequence[tuple[str, Principal]], source: str = "", local: bool = False):
        self._entries = [(bytes.fromhex(h), p) for h, p in entries]
        self.source = source
        self.is_local = local

    @classmethod
    def local(cls) -> "KeyStore":
        """No keys file: every request is the machine's own user (serve 127.0.0.1 only)."""
        return cls([], source="", local=True)

    @classmethod
    def load(cls, path: str | Path) -> "KeyStore":
        """Read a keys file. Raises ConfigError naming the file and the entry on a parse error,
        an unknown field, a hash that is not 64 hex characters, a repeated hash, a bad user or
        group name, or a file without keys."""
        p = Path(path)
        data = read_toml(p, "keys file")
        unknown = set(data) - {"keys"}
        if unknown:
            raise ConfigError(f"{p}: unknown top-level key {sorted(unknown)[0]!r} (expected [[keys]] tables)")
        raw = data.get("keys")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{p}: no [[keys]] entries")
        entries: list[tuple[str, Principal]] = []
        seen: set[str] = set()
        for i, e in enumerate(raw, 1):
            entries.append(_parse_entry(p, i, e, seen))
        return cls(entries, source=str(p))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal of ``presented`` (the raw key), or None when it matches no entry.

        Every stored hash is compared (constant time each), whatever matches first."""
        if self.is_local:
            return Principal(user="local", groups=(), admin=True, local=True)
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for h, p in self._entries:
            if hmac.compare_digest(digest, h) and found is None:
                found = p
        return found


def _parse_entry(path: Path, i: int, e: Any, seen: set[str]) -> tuple[str, Principal]:
    where = f"{path}: keys entry {i}"
    if not isinstance(e, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(e) - _KEY_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: sha256, user, groups, admin)")
    h = e.get("sha256")
    if not isinstance(h, str) or not _HEX64.fullmatch(h.lower()):
        raise ConfigError(f"{where}: sha256 must be the 64-hex-character sha256 of the key (see `rag serve --new-key`)")
    h = h.lower()
    if h in seen:
        raise ConfigError(f"{where}: the same key hash appears twice")
    seen.add(h)
    user = e.get("user")
    if not isinstance(user, str) or not _NAME.fullmatch(user):
        raise ConfigError(f"{where}: user must be 1-64 characters of letters, digits, . _ @ -")
    groups = e.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and _NAME.fullmatch(g) for g in groups):
        raise ConfigError(f"{where}: groups must be a list of names (letters, digits, . _ @ -)")
    admin = e.get("admin", False)
    if not isinstance(admin, bool):
        raise ConfigError(f"{where}: admin must be true or false")
    return h, Principal(user=user, groups=tuple(dict.fromkeys(groups)), admin=admin)


def bearer_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` (what the openai client
    sends) or ``X-API-Key: KEY``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key and x_api_key.strip() else None


class KeyMiddleware:
    """Pure ASGI middleware: every request under ``prefix`` must present a known key, checked
    before anything of the request is read (so a stranger's body is never parsed); the
    caller's :class:`Principal` goes to ``scope["rag.principal"]``. A missing or wrong key is
    a 401 with one JSON line (the OpenAI error shape) and ``WWW-Authenticate: Bearer``."""

    def __init__(self, app, keys: KeyStore, prefix: str = "/v1/"):
        self.app = app
        self.keys = keys
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            key = bearer_key(headers.get("authorization"), headers.get("x-api-key"))
            p = self.keys.authenticate(key)
            if p is None:
                msg = "missing API key (send 'Authorization: Bearer KEY')" if not key else "invalid API key"
                body = json.dumps({"error": {"message": msg, "type": "authentication_error", "code": 401}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            scope["rag.principal"] = p
        await self.app(scope, receive, send)
