"""Task objects: the per-task behaviour (batch -> losses, validation metrics) of the one training loop."""
