"""The one style of hyper-parameter checks of every wsml loss, run in the loss constructors.

Each returns the value converted to a plain Python type, or raises ValueError naming the hyper-parameter, the
accepted values and the value received. Numbers may be Python or numpy scalars (``numbers.Real`` /
``numbers.Integral``); booleans are never accepted as numbers.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional


def check_number(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False, hint: str = "") -> float:
    """A finite real number in [lo, hi] (``lo_open``/``hi_open`` exclude the bound); ``hint`` ends the message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{hint}, got {value!r}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        left = "(" if lo_open or lo is None else "["
        right = ")" if hi_open or hi is None else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} must be in {left}{lo_s}, {hi_s}{right}{hint}, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, lo: int = 1) -> int:
    """An integer >= lo (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...], lower: bool = False) -> str:
    """One of the strings ``choices`` (compared in lower case when ``lower``)."""
    key = value.lower() if lower and isinstance(value, str) else value
    if not isinstance(key, str) or key not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return key
