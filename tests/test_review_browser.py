"""The review page in a real browser (headless Chromium driven by selenium): load it, decide with the keyboard,
press Export, and check the labels CSV it wrote. `make test` installs chromium + chromium-driver when run as
root; elsewhere these tests are skipped with the reason."""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path

import pytest
from review_helpers import CLASSES, fake_run, make_own_data, pairs, scorer

from wsml.tools.review import MissingReview
from wsml.tools.review.build import start_val
from wsml.tools.review.server import make_server, url_of
from wsml.tools.review.state import Source

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,  # starts a browser
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                 "(`make test` installs them when run as root; else `sudo apt-get install chromium "
                                 "chromium-driver`)")]
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in CHROMIUM_ARGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_script_timeout(10)
    yield driver
    driver.quit()


def _serve(review):
    server = make_server(review)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _keys(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _export(driver) -> dict:
    """Press Export and wait until the page shows the written CSV; its rows by path."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element("id", "export").click()
    wait = WebDriverWait(driver, 10, poll_frequency=0.05)
    path = wait.until(lambda d: d.find_element("id", "export").get_attribute("data-done"))
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def _open(driver, server) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url_of(server))
    wait = WebDriverWait(driver, 10, poll_frequency=0.05)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))


def test_val_page_keyboard_and_export(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    run = fake_run(make_own_data(tmp_path / "data"), tmp_path)
    review = start_val(run, n=3, seed=0, scorer=scorer)
    views = [review.view(i) for i in range(3)]
    server = _serve(review)
    try:
        _open(browser, server)
        shown = [li.get_attribute("data-name") for li in browser.find_elements("css selector", "#classes li")]
        assert shown == [c["name"] for c in views[0]["classes"]]  # every class, highest score first
        on = [li.get_attribute("data-name") for li in browser.find_elements("css selector", "#classes li.on")]
        assert on == [c["name"] for c in views[0]["classes"] if c["on"]]  # pre-filled from scores + given labels
        _keys(browser, "1", "4", Keys.ENTER)  # toggle the 1st and 4th class, accept -> next image
        _keys(browser, "x", "2", Keys.ENTER)  # clear, then only the 2nd class
        _keys(browser, Keys.ARROW_LEFT, Keys.ARROW_LEFT, "3")  # back to the first: toggle its 3rd class (saved)
        rows = _export(browser)
    finally:
        server.shutdown()
        server.server_close()
    c0 = views[0]["classes"]
    want0 = {c["name"] for c in c0 if c["on"]} ^ {c0[0]["name"], c0[3]["name"], c0[2]["name"]}
    assert rows[views[0]["image"]]["split"] == "val"
    assert rows[views[0]["image"]]["labels"] == ";".join(n for n in CLASSES if n in want0)
    assert rows[views[1]["image"]] == {"path": views[1]["image"], "labels": views[1]["classes"][1]["name"],
                                       "negatives": "", "split": "val"}
    assert rows[views[2]["image"]]["split"] == "train"  # not accepted: stays a training row


def test_missing_page_keyboard_and_export(browser, tmp_path):
    data = make_own_data(tmp_path / "data")
    source = Source(str(data / "labels.csv"), str(data), CLASSES, [0.5] * 4, "toy")
    images = ["img/004.png", "img/005.png", "img/006.png"]
    review = MissingReview.create(tmp_path / "run" / "review", source,
                                  pairs(images, ["yak", "cat", "dog"], [0.9, 0.8, 0.7]), {}, k=3, folds=0)
    server = _serve(review)
    try:
        _open(browser, server)
        assert len(browser.find_elements("css selector", ".card img[loading=lazy]")) == 3
        assert not browser.find_element("id", "val").is_displayed()  # only this mode's panel
        _keys(browser, "a", "r", "a")  # accept, reject, accept: the focus moves on after each decision
        rows = _export(browser)
    finally:
        server.shutdown()
        server.server_close()
    assert (rows["img/004.png"]["labels"], rows["img/004.png"]["negatives"]) == ("dog;yak", "")
    assert (rows["img/005.png"]["labels"], rows["img/005.png"]["negatives"]) == ("owl", "cat")
    assert rows["img/006.png"]["labels"] == "cat;dog"
    assert Path(review.folder / "missing-decisions.json").is_file()
