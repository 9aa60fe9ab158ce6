"""wsml.registry: one name normalisation, listing, lazy entries, families and clear errors, shared by the losses,
backbones, data sets and callbacks; and ``wsml.config`` importable without torch."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from wsml.data import ADAPTERS
from wsml.losses.registry import LOSSES
from wsml.models.registry import BACKBONES, resolve_backbone
from wsml.registry import Registry
from wsml.train.builders import channels_for
from wsml.train.callbacks import CALLBACKS


def test_one_normalisation_for_every_kind():
    assert LOSSES.resolve("LL_R") == LOSSES.resolve("ll-r") == "ll-r"
    assert BACKBONES.resolve("small-cnn") == BACKBONES.resolve("Small_CNN") == "small_cnn"
    assert ADAPTERS.resolve("fashion_mosaic") == "fashion-mosaic" and "FASHION-mosaic" in ADAPTERS
    assert CALLBACKS.resolve("memorization-eval") == "memorization_eval"
    assert resolve_backbone("timm:resnet18")[1] == ("resnet18",)  # a family keeps the model name's spelling
    assert channels_for(SimpleNamespace(model=SimpleNamespace(backbone="Small-CNN", pretrained=False, weights=None)),
                        SimpleNamespace(kind="images", meta={"channels": 1})) == 1  # any spelling is the small CNN
    for reg in (LOSSES, BACKBONES, ADAPTERS, CALLBACKS):
        assert reg in Registry.every and reg.available()


def test_register_lazy_alias_conflict_unknown_and_restore():
    reg = Registry("widget", hint=" (or a path)")
    saved = reg.snapshot()
    try:
        @reg.register("big_one", aliases=("large",))
        class Big:
            pass

        reg.register("json", lazy="json:dumps")
        assert reg.get("BIG-ONE") is Big and reg.get("large") is Big and reg.resolve("Large") == "big_one"
        assert reg.get("json")([1]) == "[1]" and reg["json"] == "json:dumps"  # imported only by get()
        assert reg.available() == ["big_one", "json"] and reg.aliases() == ["large"]
        with pytest.raises(ValueError, match="widget name 'large' is already registered for 'big_one'"):
            reg.register("other", aliases=("LARGE",))(Big)
        with pytest.raises(ValueError, match=r"unknown widget 'nope'; available: big_one, json \(aliases: large\) "
                                             r"\(or a path\)"):
            reg.get("nope")
        reg.register("broken", lazy="no_such_module_xyz:f")
        with pytest.raises(ValueError, match="widget 'broken': cannot import 'no_such_module_xyz:f'"):
            reg.get("broken")
        reg.unregister("big-one")
        assert "large" not in reg and "big_one" not in reg
    finally:
        reg.restore(saved)
        Registry.every.remove(reg)
    assert reg.available() == []


@pytest.mark.slow  # starts a child python
def test_config_and_the_command_tree_import_without_torch(child_env):
    """wsml.config, and `wsml prepare` up to its adapter (half a GiB and seconds less for a large CSV)."""
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "import wsml.config, wsml.registry, wsml.cli\n"
            "cfg = wsml.config.Config(); assert cfg.to_dict()['loss']['name']\n"
            "wsml.cli.build_parser().parse_args(['prepare', 'csv', '--root', 'x'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=child_env())
    assert proc.returncode == 0, proc.stderr
