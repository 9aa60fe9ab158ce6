"""Data sets: the canonical index, the reference protocol and one adapter per format.

``prepare(name, out, root=..., **options)`` runs an adapter and writes a prepared folder that
``DatasetIndex.load`` reads. Adapters are imported lazily so that optional dependencies (pycocotools,
river) are only needed for the data sets that use them.
"""

from __future__ import annotations

from typing import Any, Optional

from wsml._types import PathLike
from wsml.data._io import typed_options
from wsml.data.index import DatasetIndex, Split
from wsml.registry import Registry

# name -> "module:function" (imported when used); every function has the signature
#   fn(root: Optional[str], **options) -> DatasetIndex
ADAPTERS = Registry("data set")
for _name, _target in {
    "voc": "wsml.data.voc:build_voc",
    "coco": "wsml.data.coco:build_coco",
    "nus": "wsml.data.nus:build_nus",
    "cub": "wsml.data.cub:build_cub",
    "openimages": "wsml.data.openimages:build_openimages",
    "formatted": "wsml.data.formatted:build_formatted",
    "csv": "wsml.data.custom:build_csv",
    "folder": "wsml.data.custom:build_folder",
    "fashion-mosaic": "wsml.data.fashion_mosaic:build_fashion_mosaic",
    "yeast": "wsml.data.yeast:build_yeast",
}.items():
    ADAPTERS.register(_name, lazy=_target)


def available_datasets() -> list[str]:
    """Names of the data set adapters (``wsml prepare <name>``)."""
    return ADAPTERS.available()


def build_dataset(name: str, root: Optional[str] = None, **options: Any) -> DatasetIndex:
    """Run the adapter ``name`` on the files under ``root`` and return the index (nothing written)."""
    fn = ADAPTERS.get(name)
    return fn(root, **typed_options(ADAPTERS.resolve(name), fn, options))


def prepare(name: str, out: PathLike, root: Optional[str] = None, **options: Any) -> DatasetIndex:
    """Build the data set ``name`` and save it to ``out`` (what ``wsml prepare`` does)."""
    index = build_dataset(name, root, **options)
    index.save(out)
    return index


__all__ = ["ADAPTERS", "DatasetIndex", "Split", "available_datasets", "build_dataset", "prepare"]
