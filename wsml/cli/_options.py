"""Options that several commands share, declared once."""

from __future__ import annotations

import argparse


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (auto: CUDA when available)."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the model runs (auto: CUDA when available)")
