"""Practitioner tools over a finished run: thresholds, predict files, find-missing, OOF, review."""
