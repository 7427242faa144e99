"""Optimisation pieces below the experts: learning-rate schedules and row edits of
per-Gaussian tensors that keep optimiser state aligned."""
