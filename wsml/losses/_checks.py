"""Hyper-parameter checks shared by the later-method losses (ASL, Hill, SPLC, EM, Curriculum, iu-smooth).

Each returns the value converted to a plain Python type, or raises ValueError naming the hyper-parameter,
the accepted range and the value received.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional


def check_number(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number in [lo, hi] (``lo_open``/``hi_open`` exclude the bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, lo: int = 1) -> int:
    """An integer >= lo (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
