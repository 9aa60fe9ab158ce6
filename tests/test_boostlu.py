"""BoostLU (Kim et al., CVPR 2023): logits = spatial mean of BoostLU(CAM + bias), checked with NumPy on a tiny CNN."""

import numpy as np
import pytest
import torch

from wsml.models import create_model
from wsml.models.boostlu import BoostLU, apply_boostlu


def test_boostlu_logits_follow_formula():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, in_chans=1, widths=(4, 6))
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.5, -0.2, 0.0]))
    x = torch.randn(2, 1, 16, 16)
    state = torch.get_rng_state()
    boosted = BoostLU(model, alpha=5.0)
    assert torch.equal(torch.get_rng_state(), state)  # wrapping does not shift the random stream
    assert boosted.head is model.head and boosted.backbone is model.backbone
    assert list(boosted.state_dict()) == list(model.state_dict())
    fmap = model.backbone(x).detach().numpy()
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    cam = np.einsum("bdhw,cd->bchw", fmap, w) + b[None, :, None, None]
    ref = np.where(cam > 0, 5.0 * cam, cam).mean(axis=(2, 3))
    assert np.allclose(boosted(x).detach().numpy(), ref, atol=1e-5)
    assert np.allclose(boosted.boosted_cam(x).mean(dim=(2, 3)).detach().numpy(), ref, atol=1e-5)
    assert not np.allclose(ref, cam.mean(axis=(2, 3)))
    assert torch.allclose(BoostLU(model, alpha=1.0)(x), model(x), atol=1e-5)
    boosted.eval()  # also in evaluation (authors' release); BatchNorm now uses running statistics
    fmap = model.backbone(x).detach().numpy()
    cam = np.einsum("bdhw,cd->bchw", fmap, w) + b[None, :, None, None]
    assert np.allclose(boosted(x).detach().numpy(), np.where(cam > 0, 5.0 * cam, cam).mean(axis=(2, 3)), atol=1e-5)
    plain_eval = BoostLU(model, alpha=5.0, apply_in_eval=False).eval()
    assert torch.allclose(plain_eval(x), model.eval()(x))
    with pytest.raises(ValueError, match="cached pooled features"):
        boosted.train().forward_head(torch.zeros(2, 6))


def test_boostlu_vector_backbone_and_hook():
    model = create_model("linear", 2, in_features=3)
    f = torch.tensor([[1.0, -2.0, 0.5]])
    z = model(f)
    boosted = apply_boostlu(model, 5.0)
    assert torch.allclose(boosted(f), torch.where(z > 0, 5 * z, z))
    assert torch.allclose(boosted.forward_head(f), torch.where(z > 0, 5 * z, z))
    assert apply_boostlu(model, None) is model
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="alpha"):
            BoostLU(model, alpha=bad)
    with pytest.raises(ValueError, match="MultiLabelModel"):
        BoostLU(torch.nn.Linear(2, 2))


def test_config_turns_boostlu_on():
    from wsml.config import ConfigError, load_config
    from wsml.train.builders import build_model

    info = {"num_classes": 3, "in_chans": 1, "in_features": None}
    base = ["model.backbone=small_cnn", "model.pretrained=false", "model.options={widths: [4, 6]}"]
    assert not isinstance(build_model(load_config(None, base), info=info), BoostLU)
    model = build_model(load_config(None, base + ["model.boostlu_alpha=5"]), info=info)
    assert isinstance(model, BoostLU) and model.alpha == 5.0
    with pytest.raises(ValueError, match="end-to-end"):
        build_model(load_config(None, base + ["model.boostlu_alpha=5", "train.scheme=linearinit"]), info=info)
    with pytest.raises(ConfigError, match="boostlu_alpha"):
        load_config(None, base + ["model.boostlu_alpha=0"])
