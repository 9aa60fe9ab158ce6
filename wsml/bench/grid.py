"""``wsml bench SPEC.yaml``: a grid of methods × seeds on one base config, with a val-only hyper-parameter search
(the command line is in :mod:`wsml.cli.bench`).

A grid spec (``benchmarks/grids/*.yaml``; paths relative to the spec file)::

    name: fashion                      # results go to <results>/<name>.{md,json,csv}
    title: Fashion-MNIST mosaics ...
    config: ../../configs/fashion/base.yaml
    overrides: [train.epochs=6]        # applied to every run
    seeds: [0, 1, 2]                   # train.seed (initialisation, batch order); the data set stays fixed
    reference: an                      # Naive AN: what the LL methods are compared with
    upper: full                        # Full label: the upper end of the AN→Full gap
    compare: [ll-r, ll-ct, ll-cp]      # methods compared with the reference (default: all others)
    methods:                           # name -> overrides (a list of key=value or a mapping)
      an: [loss.name=an]
      ll-r: {loss.name: ll-r}
    search:                            # optional: candidates tried on search seeds, best mean VAL mAP wins
      seeds: [0]
      shared: {optim.lr: [1e-3, 3e-3]} # tried with the reference method, then used by every method
      params: {ll-r: {loss.delta_rel: [1.5, 2.5]}}   # per method
    group_map: {num_groups: 5}         # optional: OpenImages-style group mAP (paper Table 3)
    features: {...}                    # optional: cached-backbone feature data set (wsml.bench.features)

Runs live in ``<runs>/<name>/<method>/s<seed>-<hash>`` where the hash is that of the resolved config's non-default
settings, so a rerun (or the main grid after the search, or another grid under the same ``<runs>``) reuses every
finished run with the same settings. The key does not see code changes: delete the run folders to retrain then.
Test mAP is only ever reported, never used for a choice: the engine selects the epoch and the search selects
hyper-parameters on val mAP.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Optional, Sequence

import yaml

from wsml.bench import report as R
from wsml.config import parse_assignment, yaml_mapping

SPEC_KEYS = {"name", "title", "notes", "config", "overrides", "seeds", "reference", "upper", "compare", "methods",
             "search", "group_map", "features", "runs_dir"}


def _as_overrides(value, where: str) -> list[str]:
    """A method's overrides: a list of ``key=value`` strings or a (nested) mapping, flattened."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for v in value:  # checked here, parsed by load_config
            parse_assignment(v, f"{where}: override")
        return list(value)
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        return out
    raise ValueError(f"{where}: expected a list of key=value strings or a mapping, got {value!r}")


def load_spec(path: str | Path) -> dict:
    """Read and check a grid spec; paths in it become absolute (relative to the spec file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid spec {path} does not exist")
    spec = yaml_mapping(path, "a grid spec (a mapping)")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown grid spec key(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(SPEC_KEYS))}")
    for key in ("name", "config", "methods"):
        if not spec.get(key):
            raise ValueError(f"{path}: missing required key {key!r}")
    if not isinstance(spec["methods"], dict):
        raise ValueError(f"{path}: 'methods' must map method names to overrides")
    spec["path"] = str(path)
    spec["config"] = str((path.parent / spec["config"]).resolve())
    if not Path(spec["config"]).is_file():
        raise FileNotFoundError(f"{path}: base config {spec['config']} does not exist")
    spec["overrides"] = _as_overrides(spec.get("overrides"), f"{path}: overrides")
    spec["methods"] = {str(m): _as_overrides(o, f"{path}: methods.{m}") for m, o in spec["methods"].items()}
    spec["seeds"] = [int(s) for s in spec.get("seeds") or [0]]
    spec.setdefault("reference", "an")
    spec.setdefault("upper", "full")
    spec.setdefault("compare", [m for m in spec["methods"] if m not in (spec["reference"], spec["upper"])])
    search = spec.get("search") or {}
    for m in (search.get("params") or {}):
        if m not in spec["methods"]:
            raise ValueError(f"{path}: search.params names method {m!r} that is not in 'methods'")
    spec["search"] = {"seeds": [int(s) for s in search.get("seeds") or spec["seeds"][:1]],
                      "params": search.get("params") or {}, "shared": search.get("shared") or {}}
    return spec


def canonical_config(resolved: dict) -> dict:
    """The settings of a resolved config that differ from the defaults, without the ``run`` section.

    What identifies an experiment: stable when a later version adds a config field with a default (old run
    folders keep their key), sensitive to every value a spec or override sets.
    """
    from wsml.config import Config

    defaults = Config().to_dict()
    out = {}
    for section, value in resolved.items():
        if section == "run":
            continue
        base = defaults.get(section)
        if isinstance(value, dict) and isinstance(base, dict):
            diff = {k: v for k, v in value.items() if k not in base or base[k] != v}
            if diff:
                out[section] = diff
        elif value != base:
            out[section] = value
    return out


def config_key(resolved: dict) -> str:
    """10 hex digits of the hash of :func:`canonical_config`: equal keys = the same experiment."""
    blob = json.dumps(canonical_config(resolved), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_key(config_path: str, overrides: Sequence[str]) -> str:
    """The key of the config ``config_path`` ← ``overrides`` (see :func:`config_key`)."""
    from wsml.config import load_config

    return config_key(load_config(config_path, list(overrides)).to_dict())


def _train_one(job: dict) -> dict:
    """Train one grid cell (in a worker process or in-process); reuse a finished run with the same key."""
    run_dir = Path(job["run_dir"])
    for cand in [run_dir] + sorted(Path(job.get("cache_root") or run_dir).glob(f"*/{run_dir.parent.name}/"
                                                                                 f"{run_dir.name}")):
        key_file = cand / "bench_key.txt"  # the same experiment in this grid, or in another grid under the root
        if (cand / "summary.json").is_file() and key_file.is_file() and key_file.read_text() == job["key"]:
            from wsml.runs import RunFolder

            summary = RunFolder(cand).summary
            summary["reused"], summary["run_dir"] = True, str(cand)
            return summary
    import torch

    from wsml.config import load_config
    from wsml.train.engine import train

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bench_key.txt").write_text(job["key"])
    cfg = load_config(job["config"], job["overrides"] + [f"run.out={run_dir.parent}", f"run.name={run_dir.name}",
                                                         "run.overwrite=true", "run.quiet=true"])
    summary = train(cfg)
    summary["reused"] = False
    return summary


def _job(spec: dict, runs_dir: Path, method: str, seed: int, extra: Sequence[str] = (), threads: int = 0) -> dict:
    overrides = spec["overrides"] + spec["methods"][method] + list(extra) + [f"train.seed={seed}"]
    key = run_key(spec["config"], overrides)
    return {"method": method, "seed": seed, "config": spec["config"], "overrides": overrides, "key": key,
            "run_dir": str(runs_dir / method / f"s{seed}-{key}"), "threads": threads, "extra": list(extra),
            "cache_root": str(runs_dir.parent)}


def _prepare_data(jobs: list[dict], log) -> None:
    """Prepare every data set the jobs need, once, in this process: parallel workers must not race to write
    the same folder."""
    from wsml.config import load_config
    from wsml.train import builders as B

    seen = set()
    for job in jobs:
        data = load_config(job["config"], job["overrides"]).data
        if data.path not in seen:
            seen.add(data.path)
            if not (Path(data.path) / "manifest.json").is_file():
                log(f"preparing {data.path}")
                B.load_index(data)


def _execute(jobs: list[dict], workers: int, log) -> list[dict]:
    """Run the jobs (a pool of ``workers`` spawned processes, or in-process for 1); return their records."""
    out = []

    def record(job, summary):
        rec = {k: job[k] for k in ("method", "seed", "overrides", "key", "extra")}
        rec.update({k: summary[k] for k in ("test_map", "val_map", "best_epoch", "wall_time_s")})
        rec["run_dir"], rec["reused"] = summary.get("run_dir", job["run_dir"]), summary.get("reused", False)
        log(f"  {job['method']:<14} seed {job['seed']}  val {rec['val_map']:6.2f}  test {rec['test_map']:6.2f}  "
            f"epoch {rec['best_epoch']}  " + ("(reused)" if rec["reused"] else f"{rec['wall_time_s']:.0f}s"))
        out.append(rec)

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            record(job, _train_one(job))
        return out
    _prepare_data(jobs, log)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        for job, summary in zip(jobs, pool.map(_train_one, jobs)):
            record(job, summary)
    except KeyboardInterrupt:  # Ctrl-C: stop the workers now (a queued run would otherwise train to its end first)
        for proc in list((getattr(pool, "_processes", None) or {}).values()):  # terminate_workers() in Python 3.14
            proc.terminate()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
    return out


def _candidates(params: dict) -> list[list[str]]:
    """Every combination of ``{key: [values]}`` as a list of ``key=value`` overrides."""
    keys = list(params)
    return [[f"{k}={v}" for k, v in zip(keys, vals)] for vals in itertools.product(*(params[k] for k in keys))]


def _choose(label: str, cands: list[list[str]], recs: list[dict], spec: dict) -> tuple[list[str], list[dict]]:
    """The candidate with the best mean val mAP over its runs, and the search rows for the report."""
    scored = []
    for c in cands:
        vals = [r["val_map"] for r in recs if r["extra"] == c]
        scored.append((sum(vals) / len(vals), c))
    best = max(scored, key=lambda t: t[0])[1]
    return best, [{"method": label, "overrides": c, "seeds": spec["search"]["seeds"], "val_map": v,
                   "chosen": c == best} for v, c in scored]


def run_grid(spec: dict, *, runs_dir: Optional[str | Path] = None, workers: int = 1, threads: int = 0,
             methods: Optional[Sequence[str]] = None, log=print) -> dict:
    """Run the search, then methods × seeds; return ``{"spec", "search", "runs", "table", "comparison"}``."""
    runs_dir = Path(runs_dir or spec.get("runs_dir") or "runs/bench") / spec["name"]
    methods = [m for m in spec["methods"] if methods is None or m in methods]
    if spec.get("features"):
        from wsml.bench.features import prepare_feature_data

        prepare_feature_data(spec["features"], Path(spec["path"]).parent, log=log)

    # 1. Hyper-parameter search on the search seeds (best mean VAL mAP wins). First the "shared" parameters
    #    (e.g. the lr), tried with the reference method and then applied to every method; then per method.
    search, chosen = [], {}
    shared = spec["search"].get("shared") or {}
    if shared:
        cands = _candidates(shared)
        log(f"search (shared, on {spec['reference']}): {len(cands)} candidate(s)")
        jobs = [_job(spec, runs_dir, spec["reference"], s, c, threads) for c in cands for s in spec["search"]["seeds"]]
        best, rows = _choose(spec["reference"] + " (shared)", cands, _execute(jobs, workers, log), spec)
        search += rows
        spec = dict(spec, overrides=spec["overrides"] + best)
    per = {m: _candidates(p) for m, p in spec["search"]["params"].items() if m in methods}
    jobs = [_job(spec, runs_dir, m, s, c, threads) for m, cands in per.items() for c in cands
            for s in spec["search"]["seeds"]]
    if jobs:
        log(f"search: {len(jobs)} run(s) for {', '.join(per)}")
        recs = _execute(jobs, workers, log)
        for m, cands in per.items():
            chosen[m], rows = _choose(m, cands, [r for r in recs if r["method"] == m], spec)
            search += rows

    # 2. The grid: seed-major, so an interrupted grid still has every method on the first seeds.
    jobs = [_job(spec, runs_dir, m, s, chosen.get(m, ()), threads) for s in spec["seeds"] for m in methods]
    log(f"grid {spec['name']}: {len(methods)} methods x {len(spec['seeds'])} seeds = {len(jobs)} runs "
        f"({workers} worker(s))")
    runs = _execute(jobs, workers, log)

    group_note = R.add_group_maps(spec, runs) if spec.get("group_map") and runs else ""
    table = R.summarise(runs, methods)
    comparison = R.compare(runs, table, spec["reference"], spec.get("upper"),
                           [m for m in spec["compare"] if m in methods])
    return {"spec": spec, "search": search, "chosen": chosen, "runs": runs, "table": table,
            "comparison": comparison, "group_note": group_note, "finished": len(runs)}


def _merge_search(old: list[dict], new: list[dict], redone: set) -> list[dict]:
    """The committed search rows, with those of the re-run methods replaced in place by the re-run's (their
    search was run again, and its choice may have changed)."""
    fresh = {m: [s for s in new if s["method"] == m] for m in redone}
    out, placed = [], set()
    for row in old:
        m = row["method"]
        if m not in redone:
            out.append(row)
        elif m not in placed:
            out += fresh[m]
            placed.add(m)
    return out + [s for m in sorted(redone - placed) for s in fresh[m]]


def merge_results(results: dict, committed: Path, command: str) -> tuple[dict, str]:
    """A ``--only`` re-run merged into the results file ``committed`` (``<name>.json``): the re-run methods' runs
    and search rows replace theirs there, the other methods' runs and search rows are kept, the tables are
    recomputed. Returns the merged results and a command line that appends the re-run to the commands that made
    the file so far."""
    old = json.loads(committed.read_text())
    spec, redone = results["spec"], {r["method"] for r in results["runs"]}
    kept = [r for r in old["runs"] if r["method"] not in redone and r["method"] in spec["methods"]]
    runs = kept + results["runs"]  # methods the spec no longer has are dropped
    methods = [m for m in spec["methods"] if any(r["method"] == m for r in runs)]
    table = R.summarise(runs, methods)
    compare = [m for m in spec["compare"] if m in methods]
    comparison = R.compare(runs, table, spec["reference"], spec.get("upper"), compare)
    search = _merge_search(old.get("search", []), results.get("search", []), redone)
    chosen = {k: v for k, v in old.get("chosen", {}).items() if k not in redone}
    chosen.update({k: v for k, v in results.get("chosen", {}).items() if k in redone})
    merged = dict(results, search=search, chosen=chosen, runs=runs, table=table,
                  comparison=comparison, group_note=results.get("group_note") or old.get("group_note", ""),
                  finished=len(runs))
    return merged, f"{old['command']} ; rows {', '.join(sorted(redone))} re-run with: {command}"
