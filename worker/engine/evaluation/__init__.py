"""Measurements: accuracy, loss and fidelity on data; sparsity, size, FLOPs and latency of models."""
