"""Small shared definitions without heavy imports (no torch): the path type and JSON conversion.

``PathLike`` is the one alias for "a path given as str or Path" in signatures; :func:`json_default` is the one
``json.dumps(default=...)`` hook of wsml (numpy scalars and arrays, torch tensors, paths).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

PathLike = Union[str, Path]


def json_default(o: Any) -> Any:
    """A JSON value for the numpy / torch / Path objects that run files hold; TypeError for anything else."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.ndarray) or type(o).__module__.startswith("torch"):  # arrays and tensors
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
