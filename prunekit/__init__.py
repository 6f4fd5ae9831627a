"""prunekit: prune and regularize PyTorch models, and report honestly what it cost."""

__version__ = "0.1.0"
