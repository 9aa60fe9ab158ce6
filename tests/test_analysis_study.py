"""The study's statistics, Fig 4 by the paper's definition, the verdict table and the study's plots (issue 15)."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from wsml.analysis import fig4, stats, study
from wsml.analysis.modification import oracle_precision
from wsml.analysis.study_evidence import gather


def test_paired_compare_by_hand():
    a, b = {0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0}
    c = stats.paired_compare(a, b, "LL", "AN")
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.464 with 2 df -> two-sided p = 0.0742
    assert (c["n"], c["diff_mean"], c["diff_sd"]) == (3, 2.0, 1.0)
    assert c["p"] == pytest.approx(0.0742, abs=1e-3) and c["wording"] == "within noise"
    c = stats.paired_compare({0: 12.0, 1: 12.1, 2: 12.2}, {0: 10.0, 1: 10.05, 2: 10.2}, "LL", "AN")
    assert c["p"] < 0.05 and c["wording"] == "LL > AN"
    assert stats.paired_compare({0: 1.0}, {0: 2.0})["wording"] == "untested (n=1)"
    assert stats.paired_compare({0: 1.0}, {1: 2.0})["wording"] == "not run yet"  # no common seed
    assert stats.fmt_mean_sd([1.0, 3.0]) == "2.00 ± 1.41 (n=2)" and stats.fmt_mean_sd([]) == "–"
    assert "p = 0.0742" in stats.describe(stats.paired_compare(a, b, "LL", "AN"), "LL", "AN")


@pytest.mark.parametrize("words, verdict", [
    (["LL-R > AN", "LL-Ct > AN"], "yes"),
    (["LL-R > AN", "within noise"], "partly"),
    (["LL-R > AN", "LL-Ct < AN"], "partly"),  # one comparison holds: the claim holds in part
    (["within noise", "LL-Ct < AN"], "no"),  # none holds and one goes the other way
    (["LL-R > AN", "untested (n=1)", "untested (n=1)"], "yes where tested, 2 of 3 untested (n=1)"),
    (["untested (n=1)", "untested (n=1)"], "untested (n=1)"),
])
def test_combine_one_verdict_from_several_comparisons(words, verdict):
    assert stats.combine(words) == verdict


def test_oracle_precision():
    assert oracle_precision(30, 10) == 1.0  # fewer picks than false negatives: a perfect ranker is always right
    assert oracle_precision(30, 60) == 0.5 and math.isnan(oracle_precision(30, 0))


def _fake_run(d, loss, seed, metrics=None, summary=None, delta=2.0, frac=None):
    d.mkdir(parents=True)
    cfg = {"loss": {"name": loss, "delta_rel": delta}, "train": {"seed": seed, "epochs": 3, "batch_size": 32},
           "data": {"path": "nowhere", "options": {"train_frac": frac} if frac else {}}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if metrics:
        with (d / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(metrics))
            w.writerows(zip(*metrics.values()))
    if summary:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def _mod_metrics(prec, cum):
    return {"epoch": [1, 2, 3], "mod_count": [0, 10, 20], "mod_precision": ["nan"] + prec,
            "mod_oracle_precision": ["nan", 1.0, 0.75], "mod_cum_count": [0, 10, 25],
            "mod_cum_precision": ["nan"] + cum, "mod_cum_oracle_precision": ["nan", 1.0, 0.6],
            "mod_base_rate": [0.15, 0.15, 0.15]}


def test_fig4_equal_delta_accumulated_ll_cp(tmp_path):
    runs = []
    for seed, (r, ct, cp) in enumerate([(0.80, 0.78, 0.70), (0.82, 0.79, 0.71), (0.81, 0.80, 0.69)]):
        runs.append(_fake_run(tmp_path / f"r{seed}", "ll-r", seed, _mod_metrics([r, r - 0.1], [0.1, 0.1])))
        runs.append(_fake_run(tmp_path / f"ct{seed}", "ll-ct", seed, _mod_metrics([ct, ct - 0.1], [0.1, 0.1])))
        runs.append(_fake_run(tmp_path / f"cp{seed}", "ll-cp", seed, _mod_metrics([0.99, 0.99], [cp, cp - 0.1])))
    groups = fig4.group_runs(runs)
    assert set(groups) == {"LL-R Δrel=2.0", "LL-Ct Δrel=2.0", "LL-Cp Δrel=2.0 (accumulated)"}
    cp = groups["LL-Cp Δrel=2.0 (accumulated)"][0]
    assert cp["precision"][1:] == pytest.approx([70.0, 60.0])  # the accumulated column, not the per-epoch one
    assert cp["oracle"][1:] == pytest.approx([100.0, 60.0])
    assert fig4.seed_means(groups["LL-R Δrel=2.0"]) == pytest.approx({0: 75.0, 1: 77.0, 2: 76.0})
    v = fig4.fig4_verdict(groups)
    assert v["holds"] == "no" and len(v["comparisons"]) == 2  # LL-Cp lowest at equal Δrel
    m = [x for x in fig4.matched_count(groups) if x["seed"] == 0 and x["method"] == "LL-R"]
    # LL-Cp's accumulated counts 10, 25 vs LL-R's per-epoch counts 10, 20: matched to epochs 2 and 3
    assert [(x["ll_cp_count"], x["epoch"], x["count"]) for x in m] == [(10, 2, 10), (25, 3, 20)]
    assert m[1]["ll_cp_precision"] == pytest.approx(60.0) and m[1]["precision"] == pytest.approx(70.0)
    png = fig4.plot_groups(groups, tmp_path / "fig4.png")
    assert png.stat().st_size > 1000


def test_verdict_table_fills_what_exists(tmp_path):
    root = tmp_path / "study"
    for seed, (an, llr, pg_an, pg_r) in enumerate([(70.0, 75.0, 90.0, 92.0), (71.0, 75.5, 91.0, 91.5),
                                                   (70.5, 76.0, 90.5, 93.0)]):
        for m, v, pg in (("an", an, pg_an), ("ll-r", llr, pg_r)):
            d = _fake_run(root / "scratch" / "main" / f"{m}-s{seed}", m, seed,
                          summary={"test_map": v, "val_map": v, "best_epoch": 2, "wall_time_s": 1.0})
            (d / "analysis").mkdir()
            (d / "analysis" / "pointing_game.json").write_text(json.dumps({"score": pg}))
    evs = gather(root)
    recs = [e["record"] for e in evs]
    assert len(recs) == 6 and {r["steps"] for r in recs} == {None}  # data set not found: steps unknown
    v = study.regime_verdicts(evs, "scratch")
    assert v["map"]["verdict"] == "yes" and "LL-R − Naive AN = +5.00 ± 0.50 mAP" in v["map"]["evidence"]
    assert v["pointing"]["verdict"] == "within noise"  # +1.67 ± 1.04 over 3 seeds: p > 0.05
    assert v["fig5"] == study.NOT_RUN and v["table1"] == study.NOT_RUN
    table = study.verdict_table(evs)
    lines = table.splitlines()
    assert len(lines) == 2 + len(study.FINDINGS) and all(line.count("|") == 4 for line in lines)
    assert lines[2].endswith("| not run yet |")  # the pretrained column is empty
    assert np.isclose(study.mean_sd([r["test_map"] for r in recs if r["method"] == "an"])[0], 70.5)


def _rec(method, seed, value, group="main", **kw):
    r = {"method": method, "seed": seed, "test_map": value, "group": group, "train_frac": 1.0, "delta_rel": None,
         "observed_labels": None, "steps": None}
    r.update(kw)
    return r


def test_fig5_interior_best_and_fig6_in_labels():
    recs = [_rec("ll-ct", s, v + s * 0.1, "delta", delta_rel=d) for s in range(3)
            for d, v in ((0.5, 70.0), (1.0, 75.0), (2.0, 74.0), (8.0, 60.0))]
    v = study.verdict_fig5(recs)
    assert v["verdict"] == "yes" and v["evidence"].startswith("best Δrel 1 ")
    assert study.verdict_fig5(recs[:2])["verdict"] == "not run yet"
    recs = [_rec("ll-ct", s, 80.0 + s, observed_labels=4800, steps=4500) for s in range(3)]
    recs += [_rec("full", s, 70.0 + 0.5 * s, "frac", train_frac=0.125, observed_labels=6000, steps=570)
             for s in range(3)]
    v = study.verdict_fig6(recs)
    assert v["verdict"] == "yes" and "4800 labels, 4500 steps" in v["evidence"] and "6000 labels, 570 steps" in \
        v["evidence"]


def test_study_plots_one_scale_colour_bar_log_axis(tmp_path, monkeypatch):
    from wsml.analysis import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, layout=True: figs.append(fig) or out)
    cam = np.arange(64, dtype=float).reshape(8, 8)
    items = [{"image": np.zeros((8, 8)), "label": "r0", "boxes": [[0, 0, 4, 4]],
              "cams": {"AN": (cam, (7, 7), False), "LL-Ct": (2 * cam, (0, 0), True)}}]
    plots.plot_cam_overlays(items, tmp_path / "c.png", title="CAMs")
    fig = figs[-1]
    ims = [im for ax in fig.axes for im in ax.get_images() if im.get_alpha() == 0.45]
    assert {im.get_clim() for im in ims} == {(0.0, 126.0)}  # one colour scale over every map
    assert len(fig.axes) == 3 + 1 and fig.legends  # image + 2 CAMs + the colour bar; hit/miss legend
    assert all(not line.get_clip_on() for ax in fig.axes[1:3] for line in ax.get_lines())  # markers never clipped
    plots.plot_seed_lines({"LL-Ct": {0.5: [70, 71], 2.0: [75, 76, 74]}}, tmp_path / "s.png", "Δrel", "Fig 5 — x",
                          xlog=True, levels={"Naive AN": [72.0, 73.0]})
    ax = figs[-1].axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "Fig 5 — x"
    assert any(t.get_text().startswith("Naive AN 72.50 ± 0.71") for t in ax.get_legend().get_texts())
    assert len(ax.containers) == 1  # error bars
    plots.plot_seed_lines({"LL-Ct": {0.5: [70.0]}}, tmp_path / "s1.png", "Δrel", "one seed", levels={"AN": [72.0]})
    texts = [t.get_text() for t in figs[-1].axes[0].get_legend().get_texts()]  # one seed: no sd, said so
    assert "AN 72.00 (n=1)" in texts and not figs[-1].axes[0].patches  # no ±sd band from one value


def test_fig4_checks_the_explanation_against_a_perfect_ranker(tmp_path):
    runs = [_fake_run(tmp_path / "r0", "ll-r", 0, _mod_metrics([0.8, 0.7], [0.1, 0.1])),
            _fake_run(tmp_path / "cp0", "ll-cp", 0, _mod_metrics([0.9, 0.9], [0.6, 0.5]))]
    v = fig4.fig4_verdict(fig4.group_runs(runs))
    # the ranker at LL-Cp's count: 100 % in epoch 2, 60 % in epoch 3 -> LL-Cp was already 20 pp lower before it
    assert "falls below 100 % from epoch 3" in v["ranker_check"]
    assert "vs LL-R -20.0 pp before, -20.0 pp from it" in v["ranker_check"]


def test_fig6_reports_full_labels_at_matched_steps():
    def rec(group, method, frac, seed, m, steps):
        return {"group": group, "method": method, "train_frac": frac, "seed": seed, "test_map": m,
                "observed_labels": 100, "steps": steps}
    recs = [rec("main", "ll-ct", 1.0, s, 85 + s, 4500) for s in range(3)]
    recs += [rec("frac", "full", 0.125, s, 81 + s / 2, 570) for s in range(3)]
    recs += [rec("frac-steps", "full", 0.125, s, 86 + s, 4560) for s in range(3)]
    v = study.verdict_fig6(recs)
    assert v["verdict"].startswith("yes at equal epochs")  # more steps let the full labels catch up here
    assert "Full label on 0.125 of the images for 4560 steps: 87.00 ± 1.00 (n=3)" in v["evidence"]
    assert "matched steps: LL-Ct − Full = -1.00" in v["noise"]


def test_one_seed_is_untested_never_within_noise(tmp_path):
    recs = [_rec("an", 0, 70.0), _rec("ll-r", 0, 75.0)]  # one seed each: no paired test is possible
    assert study.verdict_map(recs)["verdict"] == "untested (n=1)"
    recs = [_rec("ll-ct", 0, v, "delta", delta_rel=d) for d, v in ((1.0, 70.0), (2.0, 75.0), (4.0, 72.0))]
    assert study.verdict_fig5(recs)["verdict"] == "yes, one seed: untested"  # interior best, no spread to test
    runs = [_fake_run(tmp_path / "r0", "ll-r", 0, _mod_metrics([0.8, 0.7], [0.1, 0.1])),
            _fake_run(tmp_path / "cp0", "ll-cp", 0, _mod_metrics([0.9, 0.9], [0.6, 0.5]))]
    assert fig4.fig4_verdict(fig4.group_runs(runs))["holds"] == "untested (n=1)"
    assert stats.one_seed("no", 1) == "no, one seed: untested" and stats.one_seed("no", 3) == "no"


def test_fig1_peaks_use_the_quarter_epoch_curve(tmp_path):
    from wsml.analysis import memorization as mem

    # fine-tuned from ImageNet: the FN loss rises through epoch 2 and falls after it; the per-epoch means
    # (epoch 2: 0.27, epoch 3: 0.27) hide that peak, the quarter-epoch bins show it
    fn = [0.16, 0.17, 0.21, 0.24, 0.25, 0.27, 0.28, 0.29, 0.28, 0.27, 0.26, 0.26, 0.20, 0.15, 0.10, 0.08]
    pos = [0.25 * (i + 1) for i in range(16)]
    epoch_means = [sum(fn[4 * e:4 * e + 4]) / 4 for e in range(4)]
    d = _fake_run(tmp_path / "an", "an", 0, {"epoch": [1, 2, 3, 4], **{f"mem_loss_{g}": epoch_means
                                                                      for g in mem.GROUPS}})
    with (d / mem.CURVE_FILE).open("w") as f:
        f.write("epoch,position,loss_pos,loss_tn,loss_fn\n")
        f.writelines(f"{int(p + 0.99)},{p},1.0,0.1,{v}\n" for p, v in zip(pos, fn))
    assert not mem.loss_peaks([1, 2, 3, 4], {"fn": epoch_means})["fn"]["rises_then_falls"]
    peaks = mem.memorization_summary(d)["peaks"]["fn"]
    assert peaks["rises_then_falls"] and (peaks["start_loss"], peaks["peak_at"]) == (0.25, 2.0)
    v = study.verdict_fig1([{"record": {}, "memorization": mem.memorization_summary(d)}])
    assert v["verdict"] == "partly, one seed: untested"
    assert "final below its value after epoch 1 in 1/1" in v["evidence"]


def test_stored_evidence_stands_in_for_lost_run_folders(tmp_path):
    """Run folders stay on the machine that trained them: the stored evidence gives the same verdicts without
    them, a run folder wins over its stored copy, and a run stored without its series is named, not dropped."""
    from wsml.analysis import memorization as mem
    from wsml.analysis.study_evidence import missing, read_evidence, store_evidence
    from wsml.analysis.study_plots import regime_figures

    root, store = tmp_path / "study", tmp_path / "results" / "evidence"
    curves = {f"mem_loss_{g}": [0.2, 0.3, 0.1] for g in mem.GROUPS}
    for seed in range(2):
        _fake_run(root / "scratch" / "main" / f"an-s{seed}", "an", seed, {"epoch": [1, 2, 3], **curves},
                  summary={"test_map": 70.0 + seed, "best_epoch": 2})
        for m, p in (("ll-r", 0.8), ("ll-cp", 0.9)):
            _fake_run(root / "scratch" / "main" / f"{m}-s{seed}", m, seed, _mod_metrics([p, p - 0.1], [p, p - 0.05]),
                      summary={"test_map": 75.0 + seed, "best_epoch": 3})
    evs = gather(root)
    assert [missing(e) for e in evs] == [[]] * 6 and "curve" in evs[0] and "fig4" in evs[2]
    assert store_evidence(evs, store) == 6 and store_evidence(evs, store) == 0  # the same: nothing rewritten
    stored = gather(tmp_path / "elsewhere", store)
    assert study.verdict_table(stored) == study.verdict_table(evs)
    assert "peak epoch 2.0 ± 0.0 (n=2)" in study.regime_verdicts(stored, "scratch")["fig1"]["evidence"]

    (root / "scratch" / "main" / "ll-r-s1" / "summary.json").write_text(json.dumps({"test_map": 60.0}))
    assert [e["record"]["test_map"] for e in gather(root, store) if e["record"]["run"] == "ll-r-s1"] == [60.0]

    for e in stored:  # seed 1 as stored before the series were kept
        if e["record"]["seed"] == 1:
            e.pop("curve", None)
            e.pop("fig4", None)
    assert [missing(e) for e in stored] == [[], ["curve"], [], ["fig4"], [], ["fig4"]]
    v = study.verdict_fig4([e for e in stored if e["record"]["method"] != "an"])
    assert v["verdict"] == "untested (n=1)" and "series of ll-cp-s1, ll-r-s1 were not kept" in v["evidence"]
    only = [e for e in stored if e["record"]["run"] in ("ll-r-s0", "ll-cp-s1")]  # no LL-Cp series to compare
    assert study.verdict_fig4(only)["verdict"] == "series not kept"
    written, kept = regime_figures(stored, "scratch", tmp_path, tmp_path / "no-cams.png")
    assert [p.name for p in written] == ["fig4_scratch.png"]  # from seed 0, the seed its verdict pairs over
    assert kept == ["fig1_scratch.png (no stored curve for an-s1)"]
    ll_cp_s1 = next(e for e in evs if e["record"]["run"] == "ll-cp-s1")
    ll = [e for e in stored if e["record"]["method"] != "an" and e["record"]["run"] != "ll-cp-s1"] + [ll_cp_s1]
    series, note = study.fig4_series(ll)  # LL-Cp kept seed 1's series, LL-R did not
    assert {p["seed"] for p in series} == {0}
    assert note == ("the Fig 4 series of ll-r-s1 were not kept: train them again; "
                    "left out for want of a partner of the same seed: ll-cp-s1")

    (store / "scratch" / "main" / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad\.json: not a study evidence file"):
        read_evidence(store)
