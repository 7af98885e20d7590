"""Cold start: a new `rag ask`, `rag search` or `rag serve` process on the demo index, timed from process start.

For each command, one untimed priming run (it makes the derived model files if this machine has
none yet: the ONNX embedder graphs, the generator's float32 copy), then ``--runs`` timed runs.
``rag ask``: seconds from spawning the process to the first byte of the answer on stdout (the
CLI streams answer pieces as they are decoded, so this is time to first answer token) and to
exit; ``rag search``: seconds to exit (all output written); ``rag serve``: seconds from spawning
the server to ``GET /health`` answering ``ready`` (every model loaded), with its peak RSS and
CPU seconds at that moment. Peak RSS is the process's maximum
resident set (``wait4`` rusage, the same figure as ``/usr/bin/time -v``), in MB. Prints a
Markdown table with median and max, and the CPU seconds (user + system) each process used.

    .venv/bin/rag ingest corpora --index indexes/demo     # once (make demo does it)
    .venv/bin/python benchmarks/cold_start.py [--runs 5] [--index indexes/demo] [--only ask|search|serve]

Wall-clock figures depend on what else the machine is doing: say how loaded it was next to them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAG = ROOT / ".venv" / "bin" / "rag"


def run_once(cmd: list[str]) -> tuple[float, float, float, int, str, float]:
    """(seconds to first stdout byte, seconds to exit, peak RSS MB, exit code, stdout text,
    CPU seconds user + system)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    t_exit = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (t_first, t_exit, usage.ru_maxrss / 1024, proc.returncode, (first + rest).decode("utf-8", "replace"),
            usage.ru_utime + usage.ru_stime)


def serve_ready(index: str, timeout_s: float = 120.0) -> tuple[float, float, float]:
    """Start ``rag serve`` on a free loopback port and poll ``GET /health`` every 50 ms until it
    says ``ready`` (models loaded); returns (seconds from spawn, peak RSS MB so far from
    /proc VmHWM, CPU seconds so far), then stops the server. Raises RuntimeError on an error
    status or timeout."""
    import json
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(RAG), "serve", "--index", index, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        while time.perf_counter() - t0 < timeout_s:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    status = json.loads(r.read()).get("status")
            except OSError as e:
                status = getattr(e, "code", None) and json.loads(e.read() or b"{}").get("status")  # 503 while warming
            if status == "ready":
                t = time.perf_counter() - t0
                fields = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status") if ":" in line)
                ticks = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
                return t, int(fields["VmHWM"].split()[0]) / 1024, cpu
            if status == "error":
                raise RuntimeError("rag serve reported a warm-up error")
            if proc.poll() is not None:
                raise RuntimeError(f"rag serve exited with {proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"rag serve not ready after {timeout_s:.0f} s")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--index", default="indexes/demo")
    ap.add_argument("--question", default="Who wrote zlib?")
    ap.add_argument("--query", default="adler-32 checksum")
    ap.add_argument("--only", choices=("ask", "search", "serve"), default=None, help="time one command only")
    args = ap.parse_args()
    if not (ROOT / args.index / "manifest.json").exists():
        print(f"{args.index}: no index (build it: .venv/bin/rag ingest corpora --index {args.index})", file=sys.stderr)
        return 1
    cases = [("rag ask", [str(RAG), "ask", args.question, "--index", args.index, "--no-record"], True),
             ("rag search", [str(RAG), "search", args.query, "--index", args.index], False)]
    if args.only:
        cases = [c for c in cases if c[0] == f"rag {args.only}"]
    rows = []
    if args.only in (None, "serve"):
        serve_ready(args.index)  # priming
        ready = [serve_ready(args.index) for _ in range(args.runs)]
        rows.append(("rag serve", [r[0] for r in ready], [r[0] for r in ready], [r[1] for r in ready],
                     [r[2] for r in ready], "GET /health: ready"))
        print("rag serve: timed: " + ", ".join(f"{r[0]:.2f}" for r in ready), file=sys.stderr)
        cases = [] if args.only == "serve" else cases
    for name, cmd, to_first in cases:
        prime = run_once(cmd)
        if prime[3] != 0:
            print(f"{name}: exit code {prime[3]}:\n{prime[4][-500:]}", file=sys.stderr)
            return 1
        firsts, exits, rss, cpus = [], [], [], []
        for _ in range(args.runs):
            t_first, t_exit, mb, code, out, cpu = run_once(cmd)
            if code != 0:
                print(f"{name}: exit code {code}", file=sys.stderr)
                return 1
            firsts.append(t_first)
            exits.append(t_exit)
            rss.append(mb)
            cpus.append(cpu)
        rows.append((name, firsts if to_first else exits, exits, rss, cpus, out.strip().splitlines()[0][:60]))
        print(f"{name}: priming run {prime[1]:.1f} s; timed: " + ", ".join(f"{x:.2f}" for x in rows[-1][1]), file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"{args.runs} cold runs each on {args.index} (1-minute load average at the end: {load:.1f} on "
          f"{os.cpu_count()} cores)\n")
    print("| command | measured to | median s | max s | to exit, median s | CPU s, median | peak RSS median MB | max MB | first line of output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, main_t, exits, rss, cpus, first_line in rows:
        to = {"rag ask": "first answer token", "rag serve": "/health ready"}.get(name, "output complete")
        print(f"| `{name}` | {to} | {statistics.median(main_t):.2f} | {max(main_t):.2f} | {statistics.median(exits):.2f} | "
              f"{statistics.median(cpus):.2f} | {statistics.median(rss):.0f} | {max(rss):.0f} | {first_line} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
