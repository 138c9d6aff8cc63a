"""The PyTorch runtime: executes a resolved plan (model, data, optimizer, loop, checkpoints)."""
