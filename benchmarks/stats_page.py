"""Screenshot of the `rag stats --html` page for the README (benchmarks/results/stats_page.png).

Builds the 30-question scenario of tests/ops_scenario.py (3 users, 6 sessions, mini corpus,
testing:hash-64 embedder, extractive generator) in a temporary folder, spreads alice's sessions over
the previous days, writes the page with `rag stats --html` and photographs it in headless
Chromium (selenium + /usr/bin/chromedriver).

    python benchmarks/stats_page.py [--out benchmarks/results/stats_page.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stats_page.png"))
    args = ap.parse_args()
    import ops_scenario
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="rag-stats-"))
    os.environ["RAG_DATA_DIR"] = str(tmp / "userdata")
    try:
        sc = ops_scenario.build(tmp)
        now = datetime.now(timezone.utc)
        conn = sqlite3.connect(sc.index / "records.sqlite")
        for sid, days in (("a1", 4), ("a2", 2), ("b1", 1)):
            day = (now - timedelta(days=days)).date().isoformat()
            conn.execute("UPDATE records SET created = ? || substr(created, 11) WHERE session_id = ?", (day, sid))
        conn.commit()
        conn.close()
        page = tmp / "stats.html"
        r = ops_scenario.cli("stats", "--index", str(sc.index), "--html", str(page))
        if r.returncode:
            sys.exit(r.stderr)
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1150,1500"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(page.as_uri())
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1150, min(int(height) + 40, 2400))
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
        print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) from {page}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
