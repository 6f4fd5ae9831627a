"""Analysis job kinds: per-layer sensitivity, sweeps over pruning x regularization, accuracy-aware search."""
