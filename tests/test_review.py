"""``wsml review``: the stratified val draw, decisions that survive a restart, the exported labels CSV (read back
by `wsml prepare csv`), the Label Studio tasks, paging 100 000 suggestions, and the HTTP API (no path traversal).
The real-browser test is tests/test_review_browser.py."""

from __future__ import annotations

import csv
import http.client
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from review_helpers import CLASSES, fake_run, make_own_data, pairs, scorer

from wsml.cli import main
from wsml.data.custom import build_csv
from wsml.labels import NEG, POS, UNOBS
from wsml.tools.review import MissingReview, export_review
from wsml.tools.review.build import allocate, draw_val, start_val
from wsml.tools.review.export import read_table
from wsml.tools.review.server import make_server
from wsml.tools.review.state import Source


@pytest.fixture()
def own(tmp_path) -> tuple[Path, Path]:
    data = make_own_data(tmp_path / "data")
    return data, fake_run(data, tmp_path)


def _rows(path: Path) -> dict:
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_allocate_and_draw_are_proportional_stratified_and_reproducible(own):
    assert allocate([50, 30, 15, 5], 20) == [10, 6, 3, 1]
    assert allocate([100, 1, 1], 3) == [1, 1, 1]  # every stratum once before proportions
    assert allocate([3, 2], 10) == [3, 2]  # never more than there is
    table = read_table(own[0] / "labels.csv")
    rows = draw_val(table, 5, seed=0)
    assert rows == draw_val(table, 5, seed=0) and rows != draw_val(table, 5, seed=1)
    assert len(rows) == 5 and all(table.split[i] == "train" for i in rows)
    strata = {table.pos[i][0] if table.pos[i] else "" for i in rows}
    assert strata == {"cat", "dog", "owl", ""}  # each observed class and the unlabelled images are represented


def test_val_review_resumes_and_exports_a_csv_prepare_reads(own):
    data, run = own
    original = (data / "labels.csv").read_bytes()
    review = start_val(run, n=6, seed=0, scorer=scorer)
    first = review.items[0]
    view = review.view(0)
    assert [c["score"] for c in view["classes"]] == sorted((c["score"] for c in view["classes"]), reverse=True)
    assert {c["name"] for c in view["classes"] if c["on"]} == set(review.prefill(first))
    assert set(first["observed"]) <= set(review.prefill(first))  # given labels are pre-filled
    review.decide(0, ["owl", "cat"], done=True)
    review.decide(1, ["dog"], done=False)  # toggled but not accepted yet: stays a training row
    with pytest.raises(ValueError, match="unknown class"):
        review.decide(2, ["unicorn"])
    again = start_val(run)  # resumed from RUN/review as saved: no model, same items
    assert again.items == review.items and again.view(0)["done"] and again.counts() == {"items": 6, "done": 1}
    with pytest.raises(ValueError, match="delete it"):
        start_val(run, n=7, seed=0, scorer=scorer)
    result = export_review(run / "review")
    assert (data / "labels.csv").read_bytes() == original  # the original is never written
    out = _rows(Path(result["csv"]))
    assert Path(result["csv"]).read_text().splitlines()[0] == "path,labels,negatives,split"
    assert out[first["image"]] == {"path": first["image"], "labels": "cat;owl", "negatives": "", "split": "val"}
    before = _rows(data / "labels.csv")
    assert out[review.items[1]["image"]] == before[review.items[1]["image"]]
    assert result["val_rows"] == 1 and len(out) == len(before)
    index = build_csv(root=result["csv"], allow_unseen_classes=True)  # what `wsml prepare csv` makes of it
    val = index["val"]
    assert first["image"] in val.samples and len(val) == 3  # the 2 original val rows + the completed one
    assert val.full[val.samples.index(first["image"])].tolist() == [1, 0, 1, 0]


def test_missing_review_exports_accepted_positives_and_rejected_negatives(own):
    data, run = own
    source = Source(str(data / "labels.csv"), str(data), CLASSES, [0.5] * 4, "toy")
    images = ["img/002.png", "img/003.png", "img/002.png", "img/005.png"]
    review = MissingReview.create(run / "review", source, pairs(images, ["cat", "owl", "yak", "dog"],
                                                              [0.9, 0.8, 0.7, 0.6]),
                                  {}, k=4, folds=0)
    review.decide(0, "accept")
    review.decide(1, "reject")
    review.decide(2, "accept")
    review.decide(2, "reject")  # changed its mind
    review.decide(3, "accept")
    review.decide(3, None)  # undone
    again = MissingReview.load(run / "review")
    assert again.counts() == {"items": 4, "accepted": 1, "rejected": 2}
    assert again.page(0, 10, "accepted")["items"][0]["image"] == "img/002.png"
    assert again.page(0, 10, "all")["items"][0]["labels"] == ["owl"]  # the image's given labels (from the CSV)
    r = export_review(run / "review")
    out = _rows(Path(r["csv"]))
    assert (out["img/002.png"]["labels"], out["img/002.png"]["negatives"]) == ("cat;owl", "yak")
    assert (out["img/003.png"]["labels"], out["img/003.png"]["negatives"]) == ("cat", "owl")
    assert out["img/005.png"]["labels"] == "owl" and (r["accepted"], r["rejected"]) == (1, 2)
    index = build_csv(root=r["csv"], allow_unseen_classes=True)  # "yak": no training positive
    train = index["train"]
    obs = train.observed[train.samples.index("img/002.png")]
    assert obs.tolist() == [POS, UNOBS, POS, NEG]
    tasks = json.loads(Path(r["labelstudio"]).read_text())
    xml = Path(r["labelstudio_config"]).read_text()
    assert '<Choices name="labels" toName="image" choice="multiple"' in xml and '<Image name="image"' in xml
    by_path = {t["data"]["path"]: t for t in tasks}
    assert set(by_path) == {"img/002.png", "img/003.png", "img/005.png"}  # images with a suggestion left
    t = by_path["img/002.png"]
    assert t["data"]["image"] == "/data/local-files/?d=img/002.png"
    result = t["predictions"][0]["result"][0]
    assert (result["from_name"], result["to_name"], result["type"]) == ("labels", "image", "choices")
    assert result["value"]["choices"] == ["owl", "cat"]  # given label + the suggestion not rejected
    assert t["predictions"][0]["score"] == pytest.approx(0.9) and "annotations" not in t


def test_paging_100000_suggestions(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    source = Source(str(tmp_path / "labels.csv"), str(tmp_path), CLASSES, [0.5] * 4, "toy")
    images = [f"img/{i % 25_000:05d}.png" for i in range(n)]
    classes = rng.integers(0, 4, n)
    scores = np.sort(rng.random(n))[::-1]
    review = MissingReview(tmp_path, source, images, classes, scores, known={})
    page = review.page(offset=99_990, limit=50)
    assert page["total"] == n and [it["id"] for it in page["items"]] == list(range(99_990, n))
    owl = review.page(offset=10, limit=20, cls="owl")
    expect = np.flatnonzero(classes == 2)[10:30]
    assert owl["total"] == int((classes == 2).sum()) and [it["id"] for it in owl["items"]] == expect.tolist()
    for i in (5, 50_000, 99_999):
        review.decide(i, "accept")
    assert [it["id"] for it in review.page(0, 10, "accepted")["items"]] == [5, 50_000, 99_999]
    assert review.page(0, 10, "todo")["total"] == n - 3
    assert len(review.page(0, 5000)["items"]) == 1000  # a page is at most 1000 pairs
    saved = json.loads((tmp_path / "missing-decisions.json").read_text())
    assert saved["accept"][1] == [images[50_000], CLASSES[classes[50_000]]]
    with pytest.raises(ValueError, match="status"):
        review.page(0, 10, "maybe")


class _Server:
    def __init__(self, review):
        self.server = make_server(review)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers={**hdrs, **(headers or {})})
        r = conn.getresponse()
        out = r.status, r.read()
        conn.close()
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_server_api_serves_only_the_reviews_images_inside_the_root(own, tmp_path):
    data, run = own
    (tmp_path / "secret.txt").write_text("not for the browser")
    os.symlink(tmp_path / "secret.txt", data / "img" / "link.png")  # inside the root, pointing out of it
    review = start_val(run, n=4, seed=0, scorer=scorer)
    review.items.append({**review.items[0], "image": "img/link.png"})  # even if it were under review
    review.by_image["img/link.png"] = len(review.items) - 1
    srv = _Server(review)
    try:
        status, body = srv.request("GET", "/api/info")
        assert status == 200 and json.loads(body)["classes"] == CLASSES
        page = srv.request("GET", "/")[1]
        assert page.startswith(b"<!doctype html>") and b"http:" not in page and b"https:" not in page  # offline
        image = review.items[0]["image"]
        status, body = srv.request("GET", "/img?p=" + image)
        assert status == 200 and body == (data / image).read_bytes()
        status, body = srv.request("GET", f"/img?p={image}&w=16")
        assert status == 200 and body.startswith(b"\x89PNG")
        other = next(p for p in read_table(data / "labels.csv").paths if p not in review.by_image)
        for bad in (other, "../secret.txt", "img/../../secret.txt", str(tmp_path / "secret.txt"), "img/link.png",
                    "%2e%2e/secret.txt", "/etc/passwd"):
            assert srv.request("GET", "/img?p=" + bad)[0] == 404, bad
        status, body = srv.request("POST", "/api/decide", {"id": 0, "labels": ["dog"], "done": True})
        assert status == 200 and json.loads(body)["done"] == 1
        assert srv.request("POST", "/api/decide", {"id": 99, "labels": []})[0] == 400
        assert srv.request("POST", "/api/decide", {"id": 0, "colour": "red"})[0] == 400
        assert srv.request("GET", "/api/info", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
        assert srv.request("POST", "/api/export", {}, headers={"Content-Type": "text/plain"})[0] == 403
        status, body = srv.request("POST", "/api/export", {})
        assert status == 200 and _rows(Path(json.loads(body)["csv"]))[image]["labels"] == "dog"
    finally:
        srv.close()


def test_cli_export_only_and_errors(own, capsys):
    data, run = own
    start_val(run, n=3, seed=0, scorer=scorer).decide(0, ["cat"], done=True)
    out = data / "mine.csv"
    assert main(["review", str(run), "--export-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 val rows completed" in printed and "mine.labelstudio.xml (Label Studio)" in printed and out.is_file()
    assert main(["review", str(run), "--export-only", "--out", str(data / "labels.csv")]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert main(["review", str(data), "--val"]) == 2  # not a run folder: one line, exit code 2
    assert "no config.yaml" in capsys.readouterr().err
