"""Later methods as their authors ran them: ASL's detached focusing weight, Curriculum labelling's rounds, EM+APL's
eval-mode pseudo-labelling. Each check is a small hand-derived case; sources are cited per test."""

import numpy as np
import pytest
import torch

from wsml.checkpoint import load_checkpoint
from wsml.losses import build_loss


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


# ------------------------------------------------------------------------------------------ ASL


def test_asl_default_gradient_is_the_released_detached_weight_formula():
    """Alibaba-MIIL/ASL src/loss_functions/losses.py lines 38-48 compute the focusing weight under
    ``torch.set_grad_enabled(False)`` and train.py line 93 uses ``disable_torch_grad_focal_loss=True``, γ+ = 0,
    γ− = 4, m = 0.05 (the Hill/SPLC code's ASL, src/loss_functions/losses.py lines 186-195, does the same).
    With w detached: d/dz[−w log p] = −w (1 − p) for POS, d/dz[−w log(1 − p + m)] = w p (1 − p) / (1 − p + m) for
    negatives with p > m (0 where the clamp at 1 binds). Mean over B·C entries."""
    z = np.array([[2.0, -1.0, 0.5, 0.03], [-2.0, 0.0, 1.5, -4.0]])
    t = np.array([[1, 0, -1, 0], [0, 1, 0, -1]])
    for gp, gn, m in [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (2.0, 3.0, 0.0)]:
        p = sig(z)
        pm = np.maximum(p - m, 0.0)
        g_pos = -((1 - p) ** gp) * (1 - p)
        g_neg = np.where(p > m, pm**gn * p * (1 - p) / (1 - pm), 0.0)
        ref = np.where(t == 1, g_pos, g_neg) / z.size
        zt = torch.tensor(z, requires_grad=True)
        build_loss("asl", gamma_pos=gp, gamma_neg=gn, clip=m)(zt, torch.tensor(t)).backward()
        assert np.allclose(zt.grad.numpy(), ref, atol=1e-6, rtol=0)
        # the paper's maths (weight differentiated too) is kept as an option and differs
        zp = torch.tensor(z, requires_grad=True)
        build_loss("asl", gamma_pos=gp, gamma_neg=gn, clip=m, detach_weight=False)(zp, torch.tensor(t)).backward()
        assert not np.allclose(zp.grad.numpy(), ref, atol=1e-6)


def test_asl_released_log_clamp():
    """ASL losses.py lines 33-34: log(p.clamp(min=1e-8)); a positive at z = −25 then gets no gradient, the exact
    log-sigmoid (eps=0) gives −1/(B·C)."""
    t = torch.tensor([[1]])
    z = torch.tensor([[-25.0]], dtype=torch.float64, requires_grad=True)
    loss = build_loss("asl")(z, t)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-np.log(1e-8)) and float(z.grad) == 0.0
    z2 = torch.tensor([[-25.0]], dtype=torch.float64, requires_grad=True)
    build_loss("asl", eps=0.0)(z2, t).backward()
    assert float(z2.grad) == pytest.approx(-1.0, rel=1e-9)


# ------------------------------------------------------------------------------------------ EM+APL


def test_em_apl_rounds_from_eval_mode_scores_step_by_step():
    """SPML-AckTheUnknown main.py lines 113-116: after the training phase of every epoch >= warmup_epoch the
    model scores the training set in eval mode (lines 244-267); per class, the int(0.9 · U_c / (epochs − warm-up))
    lowest-scored entries still observed 0 get the soft label = score (lines 279-296)."""
    loss = build_loss("em-apl", num_samples=6, num_classes=2, warmup_epoch=1, num_epochs=3, beta=0.5)
    observed = torch.tensor([[1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, -1]], dtype=torch.int8)
    # U = (5, 4): n = floor(0.9·5/2) = 2 for class 0, floor(0.9·4/2) = 1 for class 1
    scores = torch.tensor([[.9, .5], [.3, .8], [.2, .1], [.6, .4], [.1, .35], [.25, .05]])
    loss.set_epoch(1)
    assert loss.wants_train_scores(1) and not loss.wants_train_scores(3)
    loss.on_train_scores(scores, torch.arange(6), observed)
    rows, classes, soft = loss.pseudo_labels()
    got = {(r, c): round(s, 4) for r, c, s in zip(rows.tolist(), classes.tolist(), soft.tolist())}
    assert got == {(4, 0): 0.1, (2, 0): 0.2, (2, 1): 0.1}  # the NEG entry (5, 1) is never a candidate
    assert not loss.wants_train_scores(1)
    loss.set_epoch(2)
    # loss of epoch 2: β·BCE(z, s) on pseudo-labelled entries, EM elsewhere
    z = torch.zeros(6, 2, dtype=torch.float64)
    ent = np.log(2.0)  # H(0.5)
    ref = np.full((6, 2), -0.1 * ent)
    ref[0, 0] = ref[1, 1] = ref[5, 1] = np.log(2.0)
    for r, c in got:
        ref[r, c] = 0.5 * np.log(2.0)  # β · (−s log .5 − (1 − s) log .5)
    assert float(loss(z, observed, index=torch.arange(6))) == pytest.approx(ref.mean(), rel=1e-6)
    # second round: the next lowest among the rest; epoch 3 is the last (no round after it)
    loss.on_train_scores(scores, torch.arange(6), observed)
    assert len(loss.pseudo_labels()[0]) == 6
    loss.set_epoch(3)
    assert not loss.wants_train_scores(3)


def test_em_apl_eval_source_refuses_a_skipped_round_and_log_eps():
    """A missing eval-mode round must not pass silently; log_eps=1e-5 is losses.py lines 153-157, neg_log(x) =
    −log(x + 1e-5), applied to POS, UNOBS entropy and soft targets alike."""
    loss = build_loss("em-apl", num_samples=2, num_classes=2, warmup_epoch=1, num_epochs=3)
    loss.set_epoch(1)
    with pytest.raises(ValueError, match="on_train_scores"):
        loss.set_epoch(2)
    z = np.array([[12.0, -3.0], [0.5, -20.0]])
    t = np.array([[1, 0], [0, -1]])
    p, e = sig(z), 1e-5
    ref = np.where(t == 1, -np.log(p + e), np.where(t == -1, -np.log(1 - p + e),
                                                        0.2 * (p * np.log(p + e) + (1 - p) * np.log(1 - p + e))))
    got = build_loss("em", alpha=0.2, log_eps=1e-5)(torch.tensor(z), torch.tensor(t))
    assert float(got) == pytest.approx(ref.mean(), rel=1e-9)


def test_patience_early_stop_and_engine_feeds_train_scores(tmp_path):
    """main.py lines 126-134: stop at the first epoch whose val mAP does not beat the best (patience 1)."""
    from engine_helpers import make_feature_index

    from wsml.config import load_config
    from wsml.train.engine import train
    from wsml.train.stages import early_stop

    def patience_exhausted(vals, patience):
        state = {"epoch": len(vals), "history": [{"stage": "s", "val_map": v} for v in vals]}
        return early_stop(state, "s", 0.0, patience) is not None

    hist = [50.0, 60.0, 55.0, 58.0]
    assert not patience_exhausted(hist[:2], 1) and patience_exhausted(hist[:3], 1)
    assert patience_exhausted(hist, 2) and not patience_exhausted(hist, 3) and not patience_exhausted(hist, 0)
    assert patience_exhausted(hist + [60.0], 3)  # equal is not better
    data = make_feature_index(tmp_path / "feats", n_train=32, n_val=16, n_test=8)
    cfg = load_config(None, [f"data.path={data}", "model.backbone=linear", "model.pretrained=false",
                             "optim.name=sgd", "optim.lr=1e-12", "train.epochs=4", "train.batch_size=16",
                             "train.early_stop_patience=1", f"run.out={tmp_path}", "run.quiet=true",
                             "loss.name=em-apl", "loss.extra={warmup_epoch: 1, beta: 0.5}"])
    summary = train(cfg)
    ckpt = load_checkpoint(f"{summary['run_dir']}/last.pt")  # weights_only, as every resume
    pseudo = ckpt["loss"]["pseudo"]
    # lr ~ 0: epoch 2's val mAP equals epoch 1's (not better), so the run stops after epoch 2, having made the
    # pseudo-labelling rounds after epochs 1 and 2 from the engine's eval-mode pass
    history = ckpt["state"]["history"]
    assert ckpt["epoch"] == 2 and history[0]["val_map"] == history[1]["val_map"]
    assert ckpt["loss"]["_extra_state"]["labelled_through"] == 2
    from wsml.data import DatasetIndex

    unobs = (np.asarray(DatasetIndex.load(data)["train"].observed) == 0).sum(0)
    assert int((pseudo >= 0).sum()) == 2 * int(np.floor(0.9 * unobs / 3).sum())  # 2 rounds of ⌊0.9·U_c/3⌋
    assert summary["best_epoch"] == 1


# ------------------------------------------------------------------------------------------ Curriculum labelling

OBS = torch.tensor([[1, 0, 0], [0, -1, 0], [0, 0, 0]], dtype=torch.int8)
PROBS = torch.tensor([[0.9, 0.95, 0.3], [0.05, 0.5, 0.6], [0.2, 0.99, 0.5]])


def labelled(loss):
    rows, classes, values = loss.labels()
    return sorted(zip(rows.tolist(), classes.tolist(), values.tolist()))


def test_curriculum_score_proportion_rounds_step_by_step():
    """Durand et al. 2019 (abstract: "several curriculum learning based strategies to predict missing labels";
    Large Loss paper §2: it labels "some unannotated easy samples using its model prediction"): a round labels the
    proportion θ of the still-unknown pairs with the most confident scores, permanently, between epochs."""
    loss = build_loss("curriculum", theta=0.3, round_epochs=2, num_epochs=6)
    assert [e for e in range(1, 7) if loss.wants_train_scores(e)] == [2, 4]  # none after the last epoch
    loss.set_epoch(1)
    loss.set_epoch(2)
    with pytest.raises(ValueError, match="on_train_scores"):
        loss.set_epoch(3)  # a due round must not be skipped silently
    rows = torch.tensor([10, 11, 12])
    # 7 unknown pairs, k = ceil(0.3 · 7) = 3; |p − 0.5|: (12,1) .49 POS, then the tie (10,1) / (11,0) .45 (both)
    loss.on_train_scores(PROBS, rows, OBS)
    assert labelled(loss) == [(10, 1, 1), (11, 0, -1), (12, 1, 1)] and loss.num_modified_epoch == 3
    loss.set_epoch(3)
    # the labels are known labels from now on, also in the partial-BCE proportion p_b
    z = np.array([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7], [-2.0, 0.4, 1.1]])
    filled = np.array([[1, 1, 0], [-1, -1, 0], [0, 1, 0]])
    got = float(loss(torch.tensor(z), OBS[[0, 1, 2]], index=rows))
    assert got == pytest.approx(partial_bce_ref(z, filled), rel=1e-10)
    loss.set_epoch(4)
    # round 2: 4 unknown left, k = ceil(1.2) = 2: (12,0) .3 NEG, (10,2) .2 NEG; observed pairs never change
    loss.on_train_scores(PROBS, rows, OBS)
    assert labelled(loss) == [(10, 1, 1), (10, 2, -1), (11, 0, -1), (12, 0, -1), (12, 1, 1)]
    clone = build_loss("curriculum", theta=0.3, round_epochs=2, num_epochs=6)
    clone.load_state_dict(loss.state_dict())
    assert labelled(clone) == labelled(loss) and not clone.wants_train_scores(4)


@pytest.mark.parametrize("strategy,expected", [
    ("score-threshold", [(0, 1, 1), (1, 0, -1), (2, 1, 1)]),  # z >= 2 <=> p >= σ(2) = .881; z <= −2: p <= .119
    ("positive-only", [(0, 1, 1), (2, 1, 1)]),
])
def test_curriculum_threshold_strategies(strategy, expected):
    loss = build_loss("curriculum", strategy=strategy, threshold=2.0)
    loss.on_train_scores(PROBS, torch.arange(3), OBS)  # (0,0) p = .9 is observed: never relabelled
    assert labelled(loss) == expected
    with pytest.raises(ValueError, match="strategy"):
        build_loss("curriculum", strategy="ensemble")


def partial_bce_ref(z, t, gamma=1.0):
    """Partial-BCE: g(p) = a p^γ + b with g(1) = 1, g(0.1) = 5, times the summed BCE of the known labels / C."""
    a = -4.0 / (1.0 - 0.1**gamma)
    known = t != 0
    g = a * known.mean(1) ** gamma + (1.0 - a)
    bce = np.where(t == 1, -np.log(sig(z)), -np.log(1 - sig(z))) * known
    return (g * bce.sum(1)).sum() / z.size


# ------------------------------------------------------------------------------------------ reproduction configs


@pytest.mark.parametrize("ds", ["voc", "coco", "nus", "cub"])
def test_authors_recipes_as_configs(ds):
    """BoostLU: youngwk/BridgeGapExplanationPAMC config.py lines 22-26 (Δrel LL-R 0.5, LL-Ct 0.2, LL-Cp 0.1) and
    lines 76-80 (10 epochs, batch 16, lr 1e-5, α 5), train.py lines 26-33 (Adam, head lr ×10). EM / EM+APL:
    SPML-AckTheUnknown main.py lines 322-350 (per data set batch, lr, α, β, warm-up), 213-216 (one Adam group)."""
    from pathlib import Path

    from wsml.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / ds
    for method, delta in (("ll-r", 0.5), ("ll-ct", 0.2), ("ll-cp", 0.1)):
        c = load_config(root / f"{method}-boostlu.yaml", [])
        assert (c.loss.name, c.loss.delta_rel, c.model.boostlu_alpha) == (method, delta, 5.0)
        assert (c.optim.name, c.optim.lr, c.optim.head_lr_mult, c.optim.weight_decay) == ("adam", 1e-5, 10.0, 0.0)
        assert (c.train.epochs, c.train.batch_size, c.model.backbone, c.data.image_size) == (10, 16, "resnet50", 448)
    authors = {"voc": (8, 1e-5, 0.2, 0.02, 5), "coco": (16, 1e-5, 0.1, 0.9, 5), "nus": (16, 1e-5, 0.1, 0.2, 4),
               "cub": (8, 1e-4, 0.01, 0.4, 3)}[ds]
    c = load_config(root / "em-apl.yaml", [])
    x = c.loss.extra
    assert (c.train.batch_size, c.optim.lr, x["alpha"], x["beta"], x["warmup_epoch"]) == authors
    assert (c.optim.head_lr_mult, c.train.early_stop_patience) == (1.0, 1)
    assert (x["pseudo_source"], x["log_eps"]) == ("eval", 1e-5)
    assert load_config(root / "em.yaml", []).loss.extra == {"alpha": authors[2], "log_eps": 1e-5}


def test_bench_merge_replaces_only_the_rerun_rows(tmp_path):
    """`wsml bench --only M --merge`: M's runs replace theirs in the committed JSON, other rows stay, methods the
    spec no longer has are dropped, and the command line names both the original run and the re-run."""
    import json

    from wsml.bench.grid import merge_results

    def run(m, s, v):
        return {"method": m, "seed": s, "test_map": v, "val_map": v, "best_epoch": 1}

    old = {"command": "wsml bench g.yaml", "search": [{"method": "an"}], "chosen": {},
           "runs": [run("an", 0, 60.0), run("an", 1, 62.0), run("asl", 0, 65.0), run("asl", 1, 66.0),
                    run("imcl", 0, 27.0), run("imcl", 1, 28.0)]}
    path = tmp_path / "g.json"
    path.write_text(json.dumps(old))
    spec = {"methods": {"an": [], "asl": [], "iu-smooth": []}, "reference": "an", "upper": None,
            "compare": ["asl", "iu-smooth"]}
    new = {"spec": spec, "runs": [run("asl", 0, 70.0), run("asl", 1, 72.0), run("iu-smooth", 0, 30.0)],
           "group_note": ""}
    merged, command = merge_results(new, path, "wsml bench g.yaml --only asl,iu-smooth --merge")
    by = {r["method"]: r for r in merged["table"]}
    assert set(by) == {"an", "asl", "iu-smooth"} and by["asl"]["test_map_mean"] == pytest.approx(71.0)
    assert by["an"]["test_map_mean"] == pytest.approx(61.0) and merged["search"] == old["search"]
    assert {c["method"]: c["delta"] for c in merged["comparison"]}["asl"] == pytest.approx(10.0)
    assert command == ("wsml bench g.yaml ; rows asl, iu-smooth re-run with: "
                       "wsml bench g.yaml --only asl,iu-smooth --merge")
