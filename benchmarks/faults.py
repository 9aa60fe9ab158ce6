"""Fault injection: SIGKILL a training run at random moments, resume it, and require the uninterrupted result
bit for bit; then feed every hostile input of issue 13 to the CLI and require one line and exit code 2.

    nice -n 10 python benchmarks/faults.py            # ~2-5 min on 2 busy cores -> benchmarks/results/faults.{md,json}

The run: LL-Cp (permanent corrections: state that must survive), LinearInit (stage 1 on cached features of a
small CNN, stage 2 fine-tuning), cosine schedule, on 500 prepared Fashion-MNIST mosaics; 4 epochs.
Each trial forks a child that trains and is killed with SIGKILL (by itself at an armed moment, or by this
process after a random delay):

* ``batch``   after the forward pass and loss of a random training step, before backward/step;
* ``write``   during a random file write (checkpoint, metrics, config, feature cache, predictions): the
              temporary file holds a random prefix of the bytes, the target is not replaced yet;
* ``eval``    inside a random validation or final test pass, at a random batch;
* ``features``inside LinearInit's feature extraction (train or val split), at a random batch;
* ``random``  a SIGKILL from outside at a uniformly random time of the run.

Then it recovers as a user would: ``wsml train --resume RUN`` when ``last.pt`` exists, otherwise (killed before
the first epoch was saved: nothing to resume) the same ``wsml train`` command again with ``run.overwrite=true``.
The trial passes when metrics.csv (all columns but time), summary.json, last.pt (model, loss, optimizer,
scheduler state), best.pt and the test predictions equal the uninterrupted run's exactly, and no temporary
file is left. Children are forked from this process (torch already imported), so a trial costs seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from wsml.checkpoint import load_checkpoint  # noqa: E402
from wsml.cli import main as cli  # noqa: E402
from wsml.data.index import DatasetIndex  # noqa: E402

PHASES = ("batch", "write", "eval", "features", "random")


def train_args(data: Path, out: Path, name: str) -> list[str]:
    return ["train", str(ROOT / "configs/fashion/ll-cp.yaml"), f"data.path={data}", "data.dataset=",
            "train.scheme=linearinit", "train.linear_epochs=2", "train.epochs=2", "train.stage2_loss=continue",
            "model.options={widths: [8, 16]}", "optim.scheduler=cosine", "train.device=cpu", f"run.out={out}",
            f"run.name={name}", "run.quiet=true"]


# ------------------------------------------------------------------------------------------ forked children


def fork(fn, *, log: Path | None = None, kill_after: float | None = None, cwd: Path | None = None) -> int:
    """Run ``fn()`` (returns an exit code) in a forked child; SIGKILL it after ``kill_after`` s. Its exit code,
    ``-9`` when killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        rc = 99
        try:
            if log is not None:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
            if cwd is not None:
                os.chdir(cwd)
            rc = int(fn() or 0)
        except SystemExit as e:
            rc = int(e.code or 0)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    if kill_after is not None:
        deadline = time.monotonic() + kill_after
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(spec: dict) -> dict:
    """In the child: patch wsml so that it SIGKILLs itself at ``spec``; returns the live counts of the moments
    (training steps, file writes, batches per eval pass, batches per feature extraction)."""
    import wsml.checkpoint as ck
    import wsml.runs as rf
    import wsml.train.engine as engine
    import wsml.train.features as features

    counts = {"batch": 0, "write": 0, "write_files": [], "eval": [], "features": []}
    phase, at = spec.get("phase"), spec.get("at")

    zero_grad = torch.optim.Optimizer.zero_grad

    def zero_grad_hook(self, *a, **k):  # called after the loss, before backward and step
        counts["batch"] += 1
        if phase == "batch" and counts["batch"] == at:
            die()
        return zero_grad(self, *a, **k)

    torch.optim.Optimizer.zero_grad = zero_grad_hook
    real_write = ck.atomic_write

    def atomic_write_hook(path, write):
        counts["write"] += 1
        counts["write_files"].append(Path(path).name)
        if phase == "write" and counts["write"] == at:
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()
            fd, _ = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
            os.write(fd, data[: int(spec["fraction"] * len(data))])
            os.fsync(fd)
            die()
        return real_write(path, write)

    for module in (ck, features, rf):
        module.atomic_write = atomic_write_hook
    real_predict = engine.predict_split

    def predict_hook(forward, loader, *a, **k):
        counts["eval"].append(0)
        n = len(counts["eval"])

        def fwd(x):
            counts["eval"][-1] += 1
            if phase == "eval" and (n, counts["eval"][-1]) == tuple(at):
                die()
            return forward(x)

        return real_predict(fwd, loader, *a, **k)

    engine.predict_split = predict_hook
    real_extract = features.extract_features

    def extract_hook(model, loader, *a, **k):
        counts["features"].append(0)
        n = len(counts["features"])
        pooled = model.pooled_features

        def hooked(x):
            counts["features"][-1] += 1
            if phase == "features" and (n, counts["features"][-1]) == tuple(at):
                die()
            return pooled(x)

        model.pooled_features = hooked
        try:
            return real_extract(model, loader, *a, **k)
        finally:
            del model.pooled_features

    features.extract_features = extract_hook
    return counts


def counted_run(args: list, counts_file: Path) -> int:
    """The uninterrupted reference run, counting its moments (the hooks only count: numerics unchanged)."""
    counts = arm({})
    rc = cli(args)
    counts_file.write_text(json.dumps(counts))
    return rc


# ------------------------------------------------------------------------------------------ comparing runs


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _metrics(run: Path) -> list[str]:
    import csv

    with open(run / "metrics.csv") as f:
        return [json.dumps({k: v for k, v in r.items() if k != "time_s"}) for r in csv.DictReader(f)]


def differences(run: Path, ref: Path) -> list[str]:
    """What differs from the uninterrupted run (empty = bit-identical results)."""
    bad = []
    try:
        if _metrics(run) != _metrics(ref):
            bad.append("metrics.csv")
        keys = ("val_map", "test_map", "best_epoch", "best_stage", "epochs", "num_test")
        sa, sb = (json.loads((p / "summary.json").read_text()) for p in (run, ref))
        bad += [f"summary.{k}" for k in keys if sa.get(k) != sb.get(k)]
        la, lb = load_checkpoint(run / "last.pt"), load_checkpoint(ref / "last.pt")
        bad += [f"last.pt:{k}" for k in ("model", "loss", "optimizer", "scheduler", "epoch") if not _same(la[k], lb[k])]
        if not _same(load_checkpoint(run / "best.pt")["model"], load_checkpoint(ref / "best.pt")["model"]):
            bad.append("best.pt:model")
        pa, pb = (np.load(p / "predictions_test.npz", allow_pickle=False) for p in (run, ref))
        if not (np.array_equal(pa["scores"], pb["scores"]) and np.array_equal(pa["rows"], pb["rows"])):
            bad.append("predictions_test.npz")
        if list(run.rglob(".*.tmp")):
            bad.append("leftover .tmp files")
    except Exception as e:  # a missing or unreadable file: the run is lost
        bad.append(f"{type(e).__name__}: {e}")
    return bad


# ------------------------------------------------------------------------------------------ kill trials


def draw_kills(n: int, rng: np.random.Generator, counts: dict, wall: float) -> list[dict]:
    specs = []
    for i in range(n):
        phase = PHASES[i % len(PHASES)]
        if phase == "batch":
            spec = {"at": int(rng.integers(1, counts["batch"] + 1))}
        elif phase == "write":  # half of them in a checkpoint write (best.pt / last.pt)
            files = counts["write_files"]
            ckpts = [j + 1 for j, f in enumerate(files) if f in ("best.pt", "last.pt")]
            at = int(rng.choice(ckpts)) if rng.random() < 0.5 else int(rng.integers(1, len(files) + 1))
            spec = {"at": at, "file": files[at - 1], "fraction": round(float(rng.random()), 3)}
        elif phase in ("eval", "features"):  # uniform over every batch of every pass
            moments = [[p + 1, b + 1] for p, n in enumerate(counts[phase]) for b in range(n)]
            spec = {"at": moments[int(rng.integers(len(moments)))]}
        else:  # before 80 % of the reference time: a loaded machine may run the trial faster than the reference
            spec = {"after_s": round(float(rng.uniform(0.05, 0.8) * wall), 3)}
        specs.append({"trial": i + 1, "phase": phase, **spec})
    return specs


def kill_trial(spec: dict, data: Path, runs: Path, ref: Path, logs: Path) -> dict:
    name = f"k{spec['trial']:02d}"
    args = train_args(data, runs, name)
    run = runs / name
    log = logs / f"{name}.log"
    spec = dict(spec)
    if spec["phase"] == "random":  # a trial can outpace the reference on a loaded machine: then half the delay
        for attempt in range(1, 5):
            shutil.rmtree(run, ignore_errors=True)
            rc = fork(lambda: cli(args), log=log, kill_after=spec["after_s"])
            spec["attempts"] = attempt
            if rc == -signal.SIGKILL:
                break
            spec["after_s"] = round(spec["after_s"] / 2, 3)
    else:
        rc = fork(lambda: (arm(spec), cli(args))[1], log=log)
    row = dict(spec, killed=rc == -signal.SIGKILL, exit=rc)
    if rc != -signal.SIGKILL:
        row.update(recovery="not interrupted (finished first)", identical=not differences(run, ref))
        return row
    row["saved_epoch"] = int(load_checkpoint(run / "last.pt")["epoch"]) if (run / "last.pt").is_file() else 0
    if row["saved_epoch"]:
        row["recovery"] = "resumed"
        rc2 = fork(lambda: cli(["train", "--resume", str(run)]), log=logs / f"{name}.resume.log")
    else:  # nothing saved yet: the same command again, into the same folder
        row["recovery"] = "restarted"
        rc2 = fork(lambda: cli(args + ["run.overwrite=true"]), log=logs / f"{name}.resume.log")
    row["recovery_exit"] = rc2
    row["differences"] = differences(run, ref) if rc2 == 0 else ["recovery failed"]
    row["identical"] = not row["differences"]
    return row


# ------------------------------------------------------------------------------------------ hostile inputs


class Payload:
    """Unpickling it creates ``marker`` (what a crafted checkpoint would do instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def hostile_cases(ref: Path, data: Path, work: Path) -> list[dict]:
    """(name, setup, argv, expected text) of every hostile or careless input; setup runs in this process."""
    import yaml

    from wsml.runs import read_run_config, write_config

    def copy_run(tag: str) -> Path:
        dst = work / "hostile" / tag
        shutil.copytree(ref, dst, ignore=shutil.ignore_patterns("features"))
        return dst

    def copy_data(tag: str) -> Path:
        dst = work / "hostile-data" / tag
        shutil.copytree(data, dst)
        return dst

    from PIL import Image

    marker = work / "hostile" / "PWNED"
    img = work / "hostile" / "mosaic.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.asarray(DatasetIndex.load(data)["test"].images[0])).save(img)
    cases = []

    def case(name, argv_fn, expect, setup=None, check=None, fsize=None, cwd=None):
        cases.append({"name": name, "argv": argv_fn, "expect": expect, "setup": setup, "check": check,
                      "fsize": fsize, "cwd": cwd})

    def crafted(tag):
        run = copy_run(tag)
        ckpt = load_checkpoint(run / "last.pt")
        for f in ("best.pt", "last.pt"):
            torch.save(dict(ckpt, state=Payload(marker)), run / f)
        return run

    no_marker = (lambda: not marker.exists(), "the payload did not run")
    for cmd in ("eval", "predict", "find-missing", "resume"):
        argv = {"eval": lambda r: ["eval", str(r)], "predict": lambda r: ["predict", str(r), str(img)],
                "find-missing": lambda r: ["find-missing", str(r), "--out", str(r / "m.csv")],
                "resume": lambda r: ["train", "--resume", str(r)]}[cmd]
        case(f"crafted pickle in best.pt/last.pt: {cmd}", argv, "cannot be read safely",
             setup=lambda cmd=cmd: crafted(f"crafted-{cmd}"), check=no_marker)

    def truncated():
        run = copy_run("truncated")
        (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:300])
        return run

    case("truncated best.pt: eval", lambda r: ["eval", str(r)], "best.pt cannot be read safely", setup=truncated)

    def foreign():
        run = copy_run("foreign")
        torch.save({"weight": torch.zeros(3)}, run / "best.pt")
        return run

    case("foreign file (plain state_dict) as best.pt: eval", lambda r: ["eval", str(r)],
         "is not a wsml checkpoint", setup=foreign)
    for tag, override, expect in (("loss", "loss.name=an", "loss.name ('ll-cp' -> 'an')"),
                                  ("data", f"data.path={work / 'other'}", "data.path"),
                                  ("scheme", "train.scheme=end-to-end", "train.scheme"),
                                  ("width", "model.options={widths: [4, 8]}", "model.options"),
                                  ("fewer", "train.epochs=1", "already completed 4 epochs")):
        case(f"--resume with {override}", lambda r, o=override: ["train", "--resume", str(r), o], expect,
             setup=lambda tag=tag: copy_run(f"resume-{tag}"))  # and config.yaml stays as it was

    def cut_config():
        run = copy_run("cut-config")
        lines = (run / "config.yaml").read_text().splitlines(keepends=True)
        (run / "config.yaml").write_text("".join(lines[: len(lines) // 2]))
        return run

    case("config.yaml cut at a line boundary: eval", lambda r: ["eval", str(r)], "config.yaml is incomplete",
         setup=cut_config)

    def edited_config():
        run = copy_run("edited-config")
        data_ = yaml.safe_load((run / "config.yaml").read_text())
        data_["loss"]["name"] = "an"
        (run / "config.yaml").write_text(yaml.safe_dump(data_, sort_keys=False))
        return run

    case("config.yaml edited to another loss: resume", lambda r: ["train", "--resume", str(r)],
         "differs from the config stored in", setup=edited_config)

    def callback_code():
        run = copy_run("callback-code")
        cfg = read_run_config(run)
        cfg.callbacks = ["os:system"]
        write_config(cfg, run / "config.yaml")
        return run

    case("run folder's config names callback code: resume", lambda r: ["train", "--resume", str(r)],
         "imports callbacks only from the command line", setup=callback_code)
    case("callback that is not a callback (os:getcwd)", lambda r: train_args(data, work / "hostile", "cb") +
         ["callbacks=[os:getcwd]"], "has none of the callback methods", setup=lambda: None)
    outside = work / "hostile" / "outside"
    case("run.name=.. with run.overwrite=true", lambda r: train_args(data, outside / "runs", "..") +
         ["run.overwrite=true"], "must be a single folder name", setup=lambda: (outside / "runs").mkdir(parents=True),
         check=(lambda: sorted(p.name for p in outside.iterdir()) == ["runs"] and not any((outside / "runs").iterdir()),
                "nothing written outside run.out"))

    def missing_labels():
        d = copy_data("no-labels-obs")
        (d / "train" / "labels_obs.npy").unlink()
        return d

    case("prepared data without train/labels_obs.npy: train", lambda d: train_args(d, work / "hostile", "x"),
         "labels_obs.npy: missing", setup=missing_labels)

    def manifest_without(key, split=False):
        d = copy_data(f"manifest-{key}")
        m = json.loads((d / "manifest.json").read_text())
        m["splits"].pop(key) if split else m.pop(key)
        (d / "manifest.json").write_text(json.dumps(m))
        return d

    case("manifest.json without 'class_names': train", lambda d: train_args(d, work / "hostile", "x"),
         "key 'class_names' is missing", setup=lambda: manifest_without("class_names"))
    case("manifest.json without the val split: train", lambda d: train_args(d, work / "hostile", "x"),
         "has no split 'val'", setup=lambda: manifest_without("val", split=True))

    def pickled_array():
        d = copy_data("object-array")
        np.save(d / "val" / "labels_full.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
        return d

    case("labels_full.npy holding pickled objects: train", lambda d: train_args(d, work / "hostile", "x"),
         "not a readable numpy array", setup=pickled_array,
         check=(lambda: not marker.exists(), "no unpickling, no allow_pickle hint"))

    def wrong_shapes():
        run = copy_run("state-mismatch")
        ckpt = load_checkpoint(run / "best.pt")
        ckpt["model"] = {k: torch.zeros(2, 2) for k in ckpt["model"]}
        torch.save(ckpt, run / "best.pt")
        return run

    case("best.pt of another architecture: eval", lambda r: ["eval", str(r)], "model state does not fit",
         setup=wrong_shapes)

    def wrong_optimizer():  # last.pt after epoch 3 (so the resume loads the optimizer) with an extra group
        run = copy_run("optimizer-kind")
        ckpt = load_checkpoint(run / "last.pt")
        ckpt["optimizer"]["param_groups"].append(dict(ckpt["optimizer"]["param_groups"][0], params=[999]))
        ckpt["epoch"] = ckpt["state"]["epoch"] = 3
        ckpt["state"]["history"] = ckpt["state"]["history"][:3]
        torch.save(ckpt, run / "last.pt")
        return run

    case("last.pt with optimizer state of another kind: resume", lambda r: ["train", "--resume", str(r)],
         "optimizer state does not fit", setup=wrong_optimizer)
    case("--resume with more epochs under a cosine schedule", lambda r: ["train", "--resume", str(r),
         "train.epochs=3"], "would change the run planned by optim.scheduler=cosine",
         setup=lambda: copy_run("resume-cosine"))
    case("file size limit hit while writing (ulimit -f 8 KiB)", lambda r: train_args(data, work / "hostile", "full"),
         "while writing", setup=lambda: None, fsize=8 * 1024)

    def data_gone():
        run = copy_run("data-gone")
        cfg = read_run_config(run)
        cfg.data.path, cfg.data.dataset = "data/fashion-mosaic-gone", "fashion-mosaic"
        write_config(cfg, run / "config.yaml")
        (work / "hostile" / "cwd").mkdir()
        return run

    case("eval when the data set is gone (eval must not prepare it)", lambda r: ["eval", str(r)],
         "is not a prepared data set", setup=data_gone, cwd=work / "hostile" / "cwd",
         check=(lambda: not any((work / "hostile" / "cwd").iterdir()), "nothing written"))

    def own_data(tag: str, rows: list) -> Path:
        folder = work / "hostile" / tag
        folder.mkdir()
        for name in ("a.png", "b.png"):
            shutil.copy(img, folder / name)
        (folder / "labels.csv").write_text("path,labels,split\n" + "".join(f"{r}\n" for r in rows))
        return folder

    def bomb():
        folder = own_data("bomb", ["a.png,T-shirt/top,train", "bomb.png,T-shirt/top,train", "b.png,Trouser,test"])
        write_png_canvas(folder / "bomb.png", 13_000)  # 169 MP in ~20 KB
        return folder

    case("decompression bomb: a 20 KB PNG of 169 megapixels (prepare csv)",
         lambda d: ["prepare", "csv", "--root", str(d), "--out", str(d / "prepared")], "too many pixels",
         setup=bomb, check=(lambda: not (work / "hostile" / "bomb" / "prepared").exists(), "nothing prepared"))
    case("CSV row with a path outside the data root (../)",
         lambda d: ["prepare", "csv", "--root", str(d), "--out", str(d / "prepared")], "outside the data root",
         setup=lambda: own_data("outside-root", ["a.png,T-shirt/top,train", "../mosaic.png,T-shirt/top,train",
                                            "b.png,Trouser,test"]))
    return cases


def write_png_canvas(path: Path, side: int) -> None:
    """A 1-bit black PNG of side x side pixels: tiny on disk, huge once decoded."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = (b"\0" * (1 + (side + 7) // 8)) * side
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))


def run_hostile(cases: list[dict], logs: Path) -> list[dict]:
    rows = []
    for i, c in enumerate(cases, 1):
        target = c["setup"]()
        argv = c["argv"](target)
        log = logs / f"hostile{i:02d}.log"
        before = (target / "config.yaml").read_bytes() if target is not None and (target / "config.yaml").is_file() \
            else None

        def child(argv=argv, fsize=c["fsize"]):
            if fsize:
                import resource

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            return cli(argv)

        rc = fork(child, log=log, cwd=c["cwd"])
        err = log.read_text()
        lines = err.strip().splitlines()
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("wsml: error: ") and c["expect"] in lines[0]
              and "Traceback" not in err and "allow_pickle" not in err)
        if c["check"] is not None:
            ok = ok and c["check"][0]()
        if before is not None:  # a refused command never rewrites config.yaml
            ok = ok and (target / "config.yaml").read_bytes() == before
        rows.append({"case": c["name"], "exit": rc, "line": lines[-1] if lines else "", "refused": ok})
    return rows


def concurrent_same_name(data: Path, runs: Path, logs: Path, n: int = 3) -> dict:
    """``n`` runs started at once with one run.name: each must get its own folder and finish."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            fd = os.open(logs / f"concurrent{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            rc = 99
            try:
                rc = cli(train_args(data, runs, "same"))
            finally:
                os._exit(rc)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    folders = sorted(p.name for p in runs.iterdir() if p.name.startswith("same"))
    summaries = {json.loads((runs / f / "summary.json").read_text())["run_dir"] for f in folders
                 if (runs / f / "summary.json").is_file()}
    return {"runs": n, "exit_codes": codes, "folders": folders, "distinct_finished": len(summaries)}


# ------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=25, help="kill points (cycled over the phases)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "faults"), help="scratch folder (deleted first)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults"), help="results stem")
    a = ap.parse_args()
    command = "nice -n 10 python benchmarks/faults.py" + "".join(f" {x}" for x in sys.argv[1:])
    started = time.time()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    logs, runs = work / "logs", work / "runs"
    logs.mkdir(parents=True)
    data = work / "data"
    assert fork(lambda: cli(["prepare", "fashion-mosaic", "--out", str(data), "num_train=500", "num_test=150"]),
                log=logs / "prepare.log") == 0, (logs / "prepare.log").read_text()
    t0 = time.time()
    rc = fork(lambda: counted_run(train_args(data, runs, "reference"), work / "counts.json"),
              log=logs / "reference.log")
    wall = time.time() - t0
    assert rc == 0, (logs / "reference.log").read_text()
    ref = runs / "reference"
    counts = json.loads((work / "counts.json").read_text())
    specs = draw_kills(a.kills, np.random.default_rng(a.seed), counts, wall)
    trials = []
    for spec in specs:
        trials.append(kill_trial(spec, data, runs, ref, logs))
        t = trials[-1]
        moment = json.dumps({k: v for k, v in spec.items() if k not in ("trial", "phase")})
        print(f"kill {t['trial']:>2} {t['phase']:<8} {moment:<34} -> {t.get('recovery')}, identical={t['identical']}",
              flush=True)
    (work / "concurrent").mkdir()
    concurrent = concurrent_same_name(data, work / "concurrent", logs)
    hostile = run_hostile(hostile_cases(ref, data, work), logs)
    for h in hostile:
        print(f"hostile: {'refused' if h['refused'] else 'NOT REFUSED'}  {h['case']}: {h['line'][:110]}", flush=True)
    write_results(Path(a.out), command, counts, wall, trials, hostile, concurrent, time.time() - started)
    return 0 if all(t["identical"] for t in trials) and all(h["refused"] for h in hostile) else 1


def write_results(out: Path, command: str, counts: dict, wall: float, trials: list, hostile: list,
                  concurrent: dict, total: float) -> None:
    killed = [t for t in trials if t["killed"]]
    exact = [t for t in killed if t["identical"]]
    resumed = [t for t in killed if t.get("recovery") == "resumed"]
    lost = len(killed) - len(exact)
    refused = sum(h["refused"] for h in hostile)
    headline = (f"{len(killed)} kill points, {len(exact)} resumed exactly ({len(resumed)} from last.pt, "
                f"{len(killed) - len(resumed)} restarted: killed before the first saved epoch), {lost} runs lost; "
                f"{refused} of {len(hostile)} hostile inputs refused")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    env = (f"{platform.machine()}, {os.cpu_count()} CPU(s), load average {load}, torch {torch.__version__}, "
           f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total:.0f} s in all")
    summary = {"command": command, "headline": headline, "environment": env, "reference_wall_s": round(wall, 2),
               "moments_in_reference": counts, "trials": trials, "concurrent_same_name": concurrent,
               "hostile": hostile}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    md = ["# Fault injection and hostile inputs (issue 13)", "", f"Command: `{command}`", "",
          f"Environment: {env}.", "", f"**{headline}.**", "",
          "The run: LL-Cp, LinearInit (2 head-only epochs on cached small-CNN features + 2 fine-tuning epochs), "
          "cosine schedule, 400/100/150 Fashion-MNIST mosaics; uninterrupted it takes "
          f"{wall:.1f} s in a forked child ({counts['batch']} training steps, {counts['write']} file writes, "
          f"{len(counts['eval'])} evaluation passes, {len(counts['features'])} feature extractions). Each trial is "
          "SIGKILLed at the moment below, then recovered as a user would (`wsml train --resume RUN`, or the same "
          "command with `run.overwrite=true` when no epoch had been saved) and compared with the uninterrupted run: "
          "metrics.csv (all columns but time), summary.json, last.pt (model, loss, optimizer, scheduler), best.pt, "
          "the test predictions, no temporary file left.", "",
          f"Resumed from last.pt: {len(resumed)}; killed before the first epoch was saved (nothing to resume) and "
          f"restarted: {len(killed) - len(resumed)}; finished before the kill (not counted): "
          f"{len(trials) - len(killed)}.", "",
          "| # | phase | moment | saved epoch | recovery | bit-identical |", "|---|---|---|---|---|---|"]
    for t in trials:
        moment = {k: v for k, v in t.items() if k in ("at", "file", "fraction", "after_s", "attempts")}
        same = "yes" if t["identical"] else "NO: " + ", ".join(t.get("differences", []))
        md.append(f"| {t['trial']} | {t['phase']} | {json.dumps(moment)} | {t.get('saved_epoch', '-')} | "
                  f"{t.get('recovery')} | {same} |")
    md += ["", "Moments: `batch` = training step number (after the loss, before backward); `write` = file write "
           "number, the file, and the fraction of its bytes in the temporary file; `eval` = [evaluation pass, batch]; "
           "`features` = [extraction (1 train, 2 val), batch]; `random` = seconds after the start (`attempts` > 1: "
           "the earlier, longer delays came after the run had finished; each retry halves the delay).", "",
           f"Concurrent runs with one `run.name`: {concurrent['runs']} started at once -> folders "
           f"{', '.join(concurrent['folders'])}, exit codes {concurrent['exit_codes']}, "
           f"{concurrent['distinct_finished']} finished in distinct folders.", "",
           "## Hostile and careless inputs through the CLI", "",
           "Each must exit with code 2 and print exactly one line `wsml: error: ...` naming the file or key "
           "(no traceback, no `allow_pickle` hint), with the side checks listed in faults.py.", "",
           "| input | exit | refused | the line |", "|---|---|---|---|"]
    for h in hostile:  # paths relative to the repository, so the table reads the same on any machine
        line = h["line"].replace(str(ROOT) + "/", "").replace("|", "\\|").replace("`", "'")
        md.append(f"| {h['case'].replace(str(ROOT) + '/', '')} | {h['exit']} | {'yes' if h['refused'] else 'NO'} | "
                  f"{line[:220]} |")
    out.with_suffix(".md").write_text("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
