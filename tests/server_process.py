"""A real ``rag serve`` process on 127.0.0.1 for the server tests: started on a free port,
waited for until ``/health`` says ready, stopped with SIGTERM (then SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).absolute().parents[1]

LAUNCHER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
from rag import RAG
from rag.config import RagConfig
from rag.server.app import create_app, run_server
from rag.server.auth import KeyStore
from rag.generation.extractive import EchoGenerator

class SlowEcho(EchoGenerator):
    # streams a long answer (`words` words of `text` over and over) one word every `delay`
    # seconds, so a test can leave mid-stream
    def __init__(self, words, delay, text="word"):
        cycle = text.split()
        super().__init__(" ".join(cycle[i % len(cycle)] for i in range(words)) + " [1]")
        self.delay = delay
    def stream(self, messages, options=None):
        for piece in super().stream(messages, options):
            time.sleep(self.delay)
            yield piece

class SlowWarmRAG(RAG):
    def warm_up(self):
        time.sleep(spec["warm_up_delay_s"])
        _ = self.embedder, self.answerer

kw = {}
if spec.get("slow_words"):
    kw["generator"] = SlowEcho(spec["slow_words"], spec["slow_delay_s"], spec.get("slow_text", "word"))
cls = SlowWarmRAG if spec.get("warm_up_delay_s") else RAG
rag = cls.open(spec["index"], RagConfig.from_dict(spec["config"]), **kw)
keys = KeyStore.load(spec["keys"]) if spec.get("keys") else KeyStore.local()
run_server(create_app(rag, keys), "127.0.0.1", spec["port"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class ServerProcess:
    """``with ServerProcess(args) as url:``; ``args``: the ``rag serve`` options (the CLI), or
    ``launcher=spec`` for :data:`LAUNCHER` (a server around a RAG built in code)."""

    def __init__(self, args: list[str] | None = None, *, launcher: dict | None = None, log: Path | None = None,
                 wait_ready: bool = True, timeout_s: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if launcher is not None:
            spec = dict(launcher, port=self.port)
            self.cmd = [sys.executable, "-c", LAUNCHER, json.dumps(spec)]
        else:
            self.cmd = [sys.executable, "-m", "rag", "serve", "--port", str(self.port), *(args or [])]
        self.log = log
        self.wait_ready = wait_ready
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.url + "/health", timeout=2)
                if not self.wait_ready or r.status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {self.timeout_s} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_job(client: httpx.Client, job: dict, timeout_s: float = 60.0) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until the job is done or failed."""
    deadline = time.time() + timeout_s
    while job["state"] not in ("done", "failed"):
        if time.time() > deadline:
            raise TimeoutError(f"job {job['id']} still {job['state']} after {timeout_s} s")
        time.sleep(0.05)
        r = client.get(f"/v1/jobs/{job['id']}")
        r.raise_for_status()
        job = r.json()
    return job
