"""The web page of ``rag serve`` in real headless Chromium (Debian's chromium + chromedriver,
driven by selenium): upload a file, wait for its job, ask about it, watch the answer stream in,
click [1] and see the quote highlighted in its source card, rate the answer. Saves a screenshot
to benchmarks/results/serve_page.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from rag import RAG
from rag.config import RagConfig
from server_process import ROOT, ServerProcess

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
DATA = Path(__file__).resolve().parent / "data"
SCREENSHOT = ROOT / "benchmarks" / "results" / "serve_page.png"
UPLOAD_TEXT = ("Vostok Station\n\nVostok is a Russian research station in inland Princes Elizabeth Land, Antarctica. "
               "The Vostok station recorded the lowest natural air temperature on Earth: minus 89.2 degrees Celsius, "
               "on 21 July 1983. The station lies near the southern Pole of Cold.\n")


@pytest.fixture(scope="module")
def driver():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900",
              "--force-device-scale-factor=1"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def test_upload_ask_click_citation(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    idx = tmp_path / "idx"
    RAG.create(idx, RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}})).ingest([DATA / "mini"])
    doc = tmp_path / "vostok.txt"
    doc.write_text(UPLOAD_TEXT)
    with ServerProcess(["--index", str(idx), "--generator", "extractive"], log=tmp_path / "log") as srv:
        wait = WebDriverWait(driver, 60)
        driver.get(srv.url + "/")
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "ready"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#docs .doc")) == 5)

        # upload through the page's file input (the drop zone opens it), then wait for the job
        inp = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false", inp)
        inp.send_keys(str(doc))
        job = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jobs .job[data-state=done]")))
        assert "1 ingested" in job.text and "vostok.txt" in job.text
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#docs .doc")) == 6)
        assert "local/vostok.txt" in driver.find_element(By.ID, "docs").text

        # ask: the answer streams in piece by piece, with clickable [n]
        box = driver.find_element(By.ID, "question")
        box.send_keys("What temperature did the Vostok station record?")
        driver.find_element(By.ID, "send").click()
        answer = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".a[data-done=true]")))
        assert "89.2" in answer.text
        assert int(answer.get_attribute("data-pieces")) >= 5  # rendered as the pieces arrived
        cite = answer.find_element(By.CSS_SELECTOR, "button.cite")
        assert cite.text == "[1]" and "unverified" not in cite.get_attribute("class")

        # click [1]: the source card shows the file and the quote highlighted in its context
        cite.click()
        card = wait.until(EC.visibility_of_element_located((By.ID, "card")))
        assert "local/vostok.txt" in card.find_element(By.TAG_NAME, "h3").text
        mark = card.find_element(By.CSS_SELECTOR, ".context mark")
        assert "89.2 degrees Celsius" in mark.text
        context = card.find_element(By.CSS_SELECTOR, ".context").text
        assert len(context) > len(mark.text) and "Princes Elizabeth Land" in context
        assert "dense" in card.find_element(By.CSS_SELECTOR, ".scores").text
        assert "BM25" in card.find_element(By.CSS_SELECTOR, ".scores").text

        # thumbs up is stored as feedback on the recorded turn
        driver.find_element(By.CSS_SELECTOR, ".fb button[data-rating=up]").click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".fb button.chosen")))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        from rag.conversation import default_store

        store = default_store(RAG(idx))
        turns = store.turns()
        assert [t["feedback"] for t in turns] == ["up"] and turns[0]["question"].startswith("What temperature")

        # search mode lists ranked chunks with both retrievers' scores
        driver.find_element(By.ID, "mode-search").click()
        box.send_keys("Pole of Cold station")
        driver.find_element(By.ID, "send").click()
        hit = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".hit[data-rank='1']")))
        assert "vostok.txt" in hit.text and "BM25" in hit.text
        assert httpx.get(srv.url + "/health").json()["documents"] == 6
