"""Adapters for the public data sets and for users' own data, on tiny fixtures written in the true formats."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.adapter_files import (
    COCO_CATS,
    NUS_CONCEPTS,
    OI_MIDS,
    VOC,
    jpeg,
    write_coco,
    write_cub,
    write_nus,
    write_openimages,
    write_voc,
)

from wsml.data import DatasetIndex, build_dataset, prepare
from wsml.labels import NEG, POS, UNOBS, SparseLabels, observe_labels, split_train_val


def check_reference_protocol(index, full_train, samples_train, full_test, samples_test, **kw):
    """train/val/test must be exactly reference_splits: observe on all official train, val = 20 %, test = val."""
    obs = observe_labels(full_train, num_pos=kw.get("num_pos", 1), num_neg=kw.get("num_neg", 0),
                         seed=kw.get("seed", 1200))
    tr, va = split_train_val(len(full_train), val_frac=0.2, seed=kw.get("seed", 1200))
    assert np.array_equal(index["train"].observed, obs[tr])
    assert np.array_equal(index["train"].full, full_train[tr])
    assert index["train"].samples == [samples_train[i] for i in tr]
    assert np.array_equal(index["val"].full, full_train[va]) and index["val"].observed is None
    assert index["val"].samples == [samples_train[i] for i in va]
    assert np.array_equal(index["test"].full, full_test) and index["test"].samples == samples_test
    assert len(tr) + len(va) == len(full_train) and len(va) == round(0.2 * len(full_train))


# ----------------------------------------------------------------------------------------------- VOC
def voc_expected(truth, phase):
    flags = truth[phase]["flags"]
    ids = sorted(i for i in truth[phase]["ids"] if any(v == 1 for v in flags[i].values()))
    full = np.array([[flags[i][c] == 1 for c in VOC] for i in ids], dtype=np.uint8)
    boxes = {(i, VOC.index(c), x0 - 1, y0 - 1, x1, y1) for i in ids
             for c, d, (x0, y0, x1, y1) in truth[phase]["objects"][i] if not d}
    return ids, full, boxes


def box_set(split):
    return {(split.samples[int(b[0])][:-4], int(b[1]), *map(float, b[2:])) for b in split.boxes}


@pytest.mark.parametrize("nesting", ["top", "VOCdevkit", "VOC2012"])
def test_voc_labels_order_boxes_and_protocol(tmp_path, nesting):
    truth = write_voc(tmp_path)
    root = {"top": tmp_path, "VOCdevkit": tmp_path / "VOCdevkit",
            "VOC2012": tmp_path / "VOCdevkit" / "VOC2012"}[nesting]
    index = build_dataset("voc", str(root))
    assert index.class_names == VOC and index.root == str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")
    tr_ids, tr_full, tr_boxes = voc_expected(truth, "train")
    te_ids, te_full, te_boxes = voc_expected(truth, "val")
    assert len(tr_ids) == 10 and len(te_ids) == 4  # the difficult-only and the empty image are dropped
    check_reference_protocol(index, tr_full, [i + ".jpg" for i in tr_ids], te_full, [i + ".jpg" for i in te_ids])
    assert box_set(index["test"]) == te_boxes
    kept = {s[:-4] for s in index["train"].samples}
    assert box_set(index["train"]) == {b for b in tr_boxes if b[0] in kept}
    assert index.meta["source"]["train"]["dropped_no_positive"] == 2


def test_voc_difficult_flag_is_negative_and_difficult_boxes_optional(tmp_path):
    truth = write_voc(tmp_path)
    img = truth["train"]["ids"][2]  # the fixture gives this image a difficult object of another class
    other = next(c for c in VOC if truth["train"]["flags"][img][c] == 0)
    index = build_dataset("voc", str(tmp_path), include_difficult=True, val_frac=0.0)
    row = index["train"].samples.index(img + ".jpg")
    assert index["train"].full[row, VOC.index(other)] == 0
    rows = index["train"].boxes[index["train"].boxes[:, 0] == row]
    assert np.array_equal(rows[rows[:, 1] == VOC.index(other)][0, 2:], [0, 0, 5, 5])


def test_voc_errors_name_file_and_line(tmp_path):
    write_voc(tmp_path)
    main = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main"
    lines = (main / "dog_train.txt").read_text().splitlines()
    lines[2] = lines[2].split()[0] + "  x"
    (main / "dog_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"dog_train\.txt, line 3: flag must be an integer"):
        build_dataset("voc", str(tmp_path))
    lines[2] = lines[2].split()[0] + "  2"
    (main / "dog_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"dog_train\.txt, line 3: flag must be one of \[-1, 0, 1\], got 2"):
        build_dataset("voc", str(tmp_path))
    (main / "dog_train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"dog_train\.txt"):
        build_dataset("voc", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cannot find the data set"):
        build_dataset("voc", str(tmp_path / "VOCdevkit" / "VOC2012" / "Annotations"))


def test_voc_bad_xml_and_missing_image(tmp_path):
    truth = write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    kept = voc_expected(truth, "val")[0]
    (base / "Annotations" / f"{kept[0]}.xml").write_text("<annotation>\n<object><name>dog</name>\n</annotation>")
    with pytest.raises(ValueError, match=rf"{kept[0]}\.xml, line 3: malformed XML"):
        build_dataset("voc", str(tmp_path))
    assert len(build_dataset("voc", str(tmp_path), boxes=False)["test"]) == 4
    (base / "JPEGImages" / f"{kept[1]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of 4 images are missing .*{kept[1]}\.jpg"):
        build_dataset("voc", str(tmp_path), boxes=False)
    index = build_dataset("voc", str(tmp_path), boxes=False, missing_images="drop")
    assert index["test"].samples == [i + ".jpg" for i in kept if i != kept[1]]
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("voc", str(tmp_path), boxes=False, num_positives=2)


def test_voc_prepare_load_round_trip(tmp_path):
    write_voc(tmp_path / "raw")
    built = prepare("voc", tmp_path / "prepared", root=str(tmp_path / "raw"), num_pos=2, seed=7)
    loaded = DatasetIndex.load(tmp_path / "prepared")
    assert loaded.class_names == VOC and loaded.root == built.root
    assert loaded.meta["protocol"]["num_pos"] == 2 and loaded.meta["protocol"]["seed"] == 7
    for name in ("train", "val", "test"):
        a, b = built[name], loaded[name]
        assert a.samples == b.samples and np.array_equal(a.full, b.full) and np.array_equal(a.boxes, b.boxes)
        assert (a.observed is None and b.observed is None) or np.array_equal(a.observed, b.observed)
    assert (loaded["train"].observed == POS).sum(1).max() == 2


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_string_order_categories_boxes_and_protocol(tmp_path):
    truth = write_coco(tmp_path)
    index = build_dataset("coco", str(tmp_path))
    assert index.class_names == [c["name"] for c in COCO_CATS]
    cat_index = {c["id"]: i for i, c in enumerate(COCO_CATS)}
    full, samples, boxes = {}, {}, {}
    for split in ("train", "val"):
        ids = sorted({a["image_id"] for a in truth[split]["anns"]}, key=str)
        assert ids != sorted(ids)  # string order really differs from numeric order here
        samples[split] = [f"{split}2014/COCO_{split}2014_{i:012d}.jpg" for i in ids]
        full[split] = np.zeros((len(ids), 3), dtype=np.uint8)
        boxes[split] = set()
        for a in truth[split]["anns"]:
            full[split][ids.index(a["image_id"]), cat_index[a["category_id"]]] = 1
            x, y, w, h = a["bbox"]
            boxes[split].add((samples[split][ids.index(a["image_id"])], cat_index[a["category_id"]], x, y, x + w,
                              y + h))
    check_reference_protocol(index, full["train"], samples["train"], full["val"], samples["val"])
    got = {(index["test"].samples[int(b[0])], int(b[1]), *map(float, b[2:])) for b in index["test"].boxes}
    assert got == boxes["val"]


def test_coco_errors(tmp_path):
    write_coco(tmp_path)
    ann = tmp_path / "annotations" / "instances_val2014.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 77
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2014\.json: annotation #0 .* unknown category_id 77"):
        build_dataset("coco", str(tmp_path))
    ann.write_text('{"images": [],\n "annotations": [\n oops]}')
    with pytest.raises(ValueError, match=r"instances_val2014\.json, line 3: invalid JSON"):
        build_dataset("coco", str(tmp_path))
    (tmp_path / "annotations" / "instances_train2014.json").unlink()
    with pytest.raises(FileNotFoundError, match="instances_train2014.json"):
        build_dataset("coco", str(tmp_path))


# ------------------------------------------------------------------------------------------ NUS-WIDE
def test_nus_windows_paths_dropping_and_protocol(tmp_path):
    truth = write_nus(tmp_path)
    index = build_dataset("nus", str(tmp_path))
    assert index.class_names == NUS_CONCEPTS and index.root == str(tmp_path / "Flickr")
    exp = {}
    for phase in ("Train", "Test"):
        paths, labels = truth[phase]["paths"], truth[phase]["labels"]
        keep = [k for k in range(len(paths)) if labels[k].any() and k != 1]  # no positive / missing file
        exp[phase] = ([paths[k] for k in keep], labels[keep].astype(np.uint8))
    assert all("\\" not in s for s in index["test"].samples)
    check_reference_protocol(index, exp["Train"][1], exp["Train"][0], exp["Test"][1], exp["Test"][0])
    assert index.meta["source"]["Train"]["dropped_missing_image"] == 1
    kept_all = build_dataset("nus", str(tmp_path), drop_empty=False, missing_images="ignore", val_frac=0.0)
    assert len(kept_all["train"]) == 14 and kept_all["train"].full[0].sum() == 0


def test_nus_errors(tmp_path):
    write_nus(tmp_path)
    lab = tmp_path / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Test.txt"
    lab.write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"Labels_sky_Test\.txt: has 2 labels but the image list has 6"):
        build_dataset("nus", str(tmp_path))
    lab.write_text("0\n1\nyes\n")
    with pytest.raises(ValueError, match=r"Labels_sky_Test\.txt, line 3: label must be an integer"):
        build_dataset("nus", str(tmp_path))
    shutil.rmtree(tmp_path / "Flickr")
    with pytest.raises(FileNotFoundError, match=r"nus/Train: none of the 14 images exists under .*Flickr"):
        build_dataset("nus", str(tmp_path))


# ----------------------------------------------------------------------------------------------- CUB
def test_cub_attributes_all_images_kept_and_protocol(tmp_path):
    truth = write_cub(tmp_path)
    for root in (tmp_path, tmp_path / "CUB_200_2011"):
        index = build_dataset("cub", str(root))
        assert index.class_names == truth["names"]
        assert index.root == str(tmp_path / "CUB_200_2011" / "images")
        tr, te = truth["is_train"] == 1, truth["is_train"] == 0
        p = np.array(truth["paths"])
        check_reference_protocol(index, truth["labels"][tr].astype(np.uint8), list(p[tr]),
                                 truth["labels"][te].astype(np.uint8), list(p[te]))
    assert len(index["train"]) + len(index["val"]) + len(index["test"]) == 15  # the empty image is kept


def test_cub_attribute_names_inside_release_and_errors(tmp_path):
    write_cub(tmp_path)
    base = tmp_path / "CUB_200_2011"
    shutil.move(tmp_path / "attributes.txt", base / "attributes" / "attributes.txt")
    assert build_dataset("cub", str(tmp_path)).num_classes == 7
    labels = base / "attributes" / "image_attribute_labels.txt"
    lines = labels.read_text().splitlines()
    bad = lines[:]
    bad[4] = "1 5 2 3 1.0"
    labels.write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match=r"image_attribute_labels\.txt, line 5: is_present must be one of"):
        build_dataset("cub", str(tmp_path))
    labels.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"no label for image 15, attribute 7"):
        build_dataset("cub", str(tmp_path))
    labels.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(ValueError, match=r"line 106: image 1, attribute 1 is listed twice"):
        build_dataset("cub", str(tmp_path))


# ---------------------------------------------------------------------------------------- OpenImages
def test_openimages_sparse_official_splits(tmp_path):
    truth = write_openimages(tmp_path)
    index = build_dataset("openimages", str(tmp_path), chunk_rows=3)
    assert index.class_names == ["Apple", "Tree, deciduous", "Car", "Dog"]
    assert index.meta["class_mids"] == OI_MIDS and index.root == str(tmp_path)
    for split in ("train", "val", "test"):
        s = index[split]
        ids, dense = (truth[split]["all_ids"], truth[split]["all_dense"]) if split == "train" else (
            truth[split]["ids"], truth[split]["dense"])  # train: the authors' list, every ImageID of the file
        assert isinstance(s.observed, SparseLabels) and s.full is None
        assert s.samples == [f"images_{split}/{i}.jpg" for i in ids]
        assert np.array_equal(s.observed.to_dense(), dense)
        assert index.meta["source"][split]["ignored_non_trainable"] == truth[split]["ignored"]
        assert index.meta["source"][split]["annotation_rows"] == truth[split]["rows"]
    dense = truth["train"]["dense"]
    assert index.meta["known_per_class"] == (dense != 0).sum(0).tolist()
    labels, mask = index["test"].eval_targets()
    assert np.array_equal(mask, truth["test"]["dense"] != UNOBS)
    assert np.array_equal(labels, truth["test"]["dense"] == POS)
    assert (truth["train"]["dense"] == NEG).any()


def test_openimages_round_trip_train_frac_and_errors(tmp_path):
    truth = write_openimages(tmp_path / "raw")
    built = prepare("openimages", tmp_path / "out", root=str(tmp_path / "raw" / "2017_11"), train_frac=0.5)
    loaded = DatasetIndex.load(tmp_path / "out")
    assert len(loaded["train"]) == round(0.5 * len(truth["train"]["all_ids"]))
    for name in ("train", "val", "test"):
        assert isinstance(loaded[name].observed, SparseLabels)
        assert np.array_equal(loaded[name].observed.to_dense(), built[name].observed.to_dense())
        assert loaded[name].samples == built[name].samples
    assert loaded.meta["known_per_class"] == built.meta["known_per_class"]
    ann = tmp_path / "raw" / "2017_11" / "validation" / "annotations-human.csv"
    with open(ann, "a", newline="") as f:
        csv.writer(f).writerow(["00000000000000ff", "verification", "/m/0a", "0.7"])
    n = len(ann.read_text().splitlines())
    with pytest.raises(ValueError, match=rf"annotations-human\.csv, line {n}: Confidence must be 0 or 1"):
        build_dataset("openimages", str(tmp_path / "raw"))
    with pytest.raises(ValueError, match="num_pos/num_neg/seed/val_frac do not apply"):
        build_dataset("openimages", str(tmp_path / "raw"), num_pos=1)


# ------------------------------------------------------------------------------------- user CSV/folder
def write_csv(path: Path, rows, header=("path", "labels", "negatives", "split")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_explicit_splits_partial_train_complete_eval(tmp_path):
    rows = [["img/0.jpg", "cat;dog", "bird", "train"], ["img/1.jpg", "dog", "", "train"],
            ["img/2.jpg", "bird", "cat", "train"], ["img/3.jpg", "", "dog", "train"],
            ["img/4.jpg", "cat", "", "val"], ["img/5.jpg", "dog;bird", "", "test"]]
    write_csv(tmp_path / "labels.csv", rows)
    for r in rows:
        jpeg(tmp_path / r[0])
    index = build_dataset("csv", str(tmp_path))
    assert index.class_names == ["bird", "cat", "dog"] and index.root == str(tmp_path)
    assert index["train"].full is None
    assert index["train"].observed.tolist() == [[-1, 1, 1], [0, 0, 1], [1, -1, 0], [0, 0, -1]]
    assert index["val"].full.tolist() == [[0, 1, 0]] and index["val"].observed is None
    assert index["test"].full.tolist() == [[1, 0, 1]] and index["test"].samples == ["img/5.jpg"]
    partial = build_dataset("csv", str(tmp_path / "labels.csv"), complete_eval=False, classes=["dog", "cat", "bird"])
    assert partial.class_names == ["dog", "cat", "bird"] and partial["test"].full is None
    labels, mask = partial["test"].eval_targets()
    assert labels.tolist() == [[1, 0, 1]] and mask.tolist() == [[True, False, True]]


def test_csv_without_split_column_follows_reference_protocol(tmp_path):
    rng = np.random.RandomState(5)
    names = ["a", "b", "c", "d"]
    full = (rng.rand(20, 4) < 0.5).astype(np.uint8)
    full[full.sum(1) == 0, 0] = 1
    rows = [[f"{k}.png", ";".join(n for n, v in zip(names, full[k]) if v)] for k in range(20)]
    write_csv(tmp_path / "all.csv", rows, header=("path", "labels"))
    write_csv(tmp_path / "test.csv", [["t0.png", "b"], ["t1.png", "a;d"]], header=("path", "labels"))
    index = build_dataset("csv", str(tmp_path), csv="all.csv", test_csv="test.csv", simulate_partial=True,
                          missing_images="ignore", seed=3)
    check_reference_protocol(index, full, [r[0] for r in rows], np.array([[0, 1, 0, 0], [1, 0, 0, 1]], np.uint8),
                             ["t0.png", "t1.png"], seed=3)
    user = build_dataset("csv", str(tmp_path), csv="all.csv", missing_images="ignore")
    tr, va = split_train_val(20, 0.2, 1200)
    assert np.array_equal(user["train"].observed, full[tr].astype(np.int8)) and user["train"].full is None
    # val drawn from training rows keeps their labels as they are: partial, never "complete" (issue 12)
    assert user["val"].full is None and np.array_equal(user["val"].observed, full[va].astype(np.int8))
    assert user.meta["label_sets"] == {"train": "partial", "val": "partial"} and "test" not in user.splits
    assert index.meta["label_sets"] == {"train": "partial", "val": "complete", "test": "complete"}


@pytest.mark.parametrize("row, message", [
    (["x.jpg", "a", "", "training"], r"line 3: split must be one of \['train', 'val', 'test'\], got 'training'"),
    (["", "a", "", "train"], "line 3: empty image path"),
    (["x.jpg", "a;b", "b", "train"], r"line 3: class\(es\) \['b'\] listed both as label and as negative"),
    (["y.jpg", "a", "", "train"], r"line 3: image 'y.jpg' is listed twice \(first at .*line 2\)"),
])
def test_csv_errors_name_file_and_line(tmp_path, row, message):
    write_csv(tmp_path / "labels.csv", [["y.jpg", "a", "", "train"], row])
    with pytest.raises(ValueError, match=r"labels\.csv, " + message):
        build_dataset("csv", str(tmp_path), missing_images="ignore")


def test_csv_unknown_class_and_missing_image(tmp_path):
    write_csv(tmp_path / "labels.csv", [["y.jpg", "a", "", "train"], ["z.jpg", "q", "", "train"]])
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: class 'q' is not in the class list"):
        build_dataset("csv", str(tmp_path), classes=["a", "b"], missing_images="ignore")
    with pytest.raises(ValueError, match=r"2 of 2 images under .* are bad \(2 missing\).*on_bad_image=drop"):
        build_dataset("csv", str(tmp_path))
    write_csv(tmp_path / "bad.csv", [["y.jpg"]], header=("path", "label"))
    with pytest.raises(ValueError, match=r"bad\.csv, line 1: unknown column\(s\) \['label'\]; the known columns"):
        build_dataset("csv", str(tmp_path), csv="bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv, line 1: the header must have the columns 'path' and 'labels'"):
        build_dataset("csv", str(tmp_path), csv="bad.csv", ignore_columns="label")


def test_folder_multi_label_and_single_label(tmp_path):
    for cls, files in {"cat": ["a.jpg", "b.jpg", "c.jpg"], "dog": ["a.jpg", "d.jpg"], "fox": ["e.png"]}.items():
        for fn in files:
            jpeg(tmp_path / cls / fn, seed=ord(fn[0]))  # the same file name has the same content
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    index = build_dataset("folder", str(tmp_path), val_frac=0.0)
    assert index.class_names == ["cat", "dog", "fox"]
    assert index["train"].samples == ["cat/a.jpg", "cat/b.jpg", "cat/c.jpg", "dog/d.jpg", "fox/e.png"]
    assert index["train"].observed.tolist() == [[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert index.meta["source"]["skipped_files"] == 1
    single = build_dataset("folder", str(tmp_path), multi_label=False, val_frac=0.0)
    assert len(single["train"]) == 6 and (single["train"].observed == POS).sum(1).tolist() == [1] * 6
    jpeg(tmp_path / "fox" / "a.jpg", size=(20, 20), seed=9)
    with pytest.raises(ValueError, match="same name as .* but different content"):
        build_dataset("folder", str(tmp_path))


def test_folder_split_layout(tmp_path):
    for split, cls, fn in [("train", "cat", "1.jpg"), ("train", "dog", "2.jpg"), ("train", "dog", "3.jpg"),
                           ("val", "cat", "4.jpg"), ("test", "dog", "5.jpg"), ("test", "cat", "5.jpg")]:
        jpeg(tmp_path / split / cls / fn)
    index = build_dataset("folder", str(tmp_path))
    assert index["train"].samples == ["train/cat/1.jpg", "train/dog/2.jpg", "train/dog/3.jpg"]
    assert index["val"].full.tolist() == [[1, 0]] and index["test"].full.tolist() == [[1, 1]]
    assert index["test"].samples == ["test/cat/5.jpg"]
