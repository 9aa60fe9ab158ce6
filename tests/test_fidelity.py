"""Paper fidelity (issue 11): wsml against the paper, the authors' code and Cole et al.'s protocol.

References read (cited per test): snucml/LargeLossMatters ("LLM", first code commit ac475fec and HEAD 5025d16b)
and elijahcole/single-positive-multi-label ("Cole").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsml.config import load_config
from wsml.evaluation import predict_split

ROOT = Path(__file__).resolve().parents[1]
PAPER_DATASETS = ("voc", "coco", "nus", "cub", "openimages")


def paper_configs() -> list[Path]:
    return sorted(p for d in PAPER_DATASETS for p in (ROOT / "configs" / d).rglob("*.yaml"))


# --- item 4: precision -----------------------------------------------------------------------------------------
def test_paper_configs_train_in_fp32() -> None:
    """Both references train in fp32 (LLM train.py at ac475fec lines 69-80 and Cole train.py: no autocast, no
    GradScaler), so every paper config sets train.amp off; ``train.amp=off`` also works as an override although
    YAML 1.1 reads ``off`` as a boolean."""
    configs = paper_configs()
    assert len(configs) > 40
    for path in configs:
        assert load_config(path).train.amp == "off", path
    assert load_config(ROOT / "configs/fashion/an.yaml", ["train.amp=off"]).train.amp == "off"


def test_evaluation_scores_are_fp32_even_inside_autocast() -> None:
    """Scores are computed in fp32 whatever the training precision (LLM train.py at ac475fec lines 87-90 and
    Cole train.py evaluate in fp32): a caller's bf16 autocast must not reach the forward pass."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(7, 5)
    x = torch.randn(12, 7)
    seen = []

    def forward(inp: torch.Tensor) -> torch.Tensor:
        out = lin(inp)
        seen.append(out.dtype)
        return out

    loader = [{"input": x[:6], "index": np.arange(6)}, {"input": x[6:], "index": np.arange(6, 12)}]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores, rows = predict_split(forward, loader, torch.device("cpu"))
    assert seen == [torch.float32, torch.float32]
    expected = torch.sigmoid(lin(x)).detach().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)  # bf16 would be off by ~1e-3
    np.testing.assert_array_equal(rows, np.arange(12))
