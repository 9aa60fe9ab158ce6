"""Screenshots of the review page (docs/img/review-val.png, review-missing.png) from bench_review.py's LL-R run.

The run's saved reviews are copied to a temporary folder, a few decisions are kept (so the pictures show
accepted, rejected and undecided items), served on 127.0.0.1 and captured with headless Chromium.

Usage: ``python benchmarks/review_screenshots.py [--run runs/bench-review/runs/ll-r-s0] [--out docs/img]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from wsml.checkpoint import write_json
from wsml.tools.review.server import make_server, url_of
from wsml.tools.review.state import MissingReview, ValReview

ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def shoot(driver, review, path: Path, keys: str = "", height: int = 800) -> None:
    driver.set_window_size(1280, height)
    server = make_server(review)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver.get(url_of(server))
        WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
        if keys:
            ActionChains(driver).send_keys(*keys).perform()
        time.sleep(1.0)  # lazy thumbnails
        driver.save_screenshot(str(path))
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/bench-review/runs/ll-r-s0")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "review"
        shutil.copytree(Path(args.run) / "review", folder)
        val = ValReview.load(folder)
        # keep the decisions before the first image (from the 40th on) with two pre-filled classes: the page opens there
        first = next(i for i in range(40, len(val.items)) if len(val.prefill(val.items[i])) >= 2)
        keep = {it["image"]: val.decisions[it["image"]]["labels"] for it in val.items[:first]}
        write_json(folder / "val-decisions.json", {k: {"labels": v, "done": True} for k, v in keep.items()})
        miss = MissingReview.load(folder)
        miss.state[7:] = 0  # in memory only: the first 7 decided, the rest still to do
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for a in ARGS + (f"--user-data-dir={Path(tmp) / 'chromium'}", "--window-size=1280,800"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            shoot(driver, ValReview.load(folder), out / "review-val.png", height=960)
            shoot(driver, miss, out / "review-missing.png", keys=Keys.ARROW_RIGHT * 7, height=960)
        finally:
            driver.quit()
    print(f"wrote {out / 'review-val.png'} and {out / 'review-missing.png'}")


if __name__ == "__main__":
    main()
