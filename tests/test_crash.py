"""kill -9 during ingest: the index always verifies and shows the old or the new state, and a
re-run matches a clean build (a short run of benchmarks/crash_test.py; the full run kills 20
times, see benchmarks/results/crash_test.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kill_during_ingest_leaves_old_or_new_state():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crash_test.py"), "--kills", "5", "--embedder", "testing:hash-64",
                        "--corpus", str(ROOT / "corpora"), "--seed", "1"], capture_output=True, text=True, cwd=ROOT,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failures" in r.stdout and "final re-run matches a clean build" in r.stdout
    assert r.stdout.count("verify ok") == 5
