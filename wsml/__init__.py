"""wsml: multi-label classification from partial labels (Large Loss Matters, CVPR 2022)."""

__version__ = "0.1.0"
