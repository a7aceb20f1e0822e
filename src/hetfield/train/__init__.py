"""Training: configuration, the loop, losses bookkeeping, checkpoints and exact resume."""
