"""The training loop and what it needs: builders, stages, checkpoints, callbacks, caches."""
