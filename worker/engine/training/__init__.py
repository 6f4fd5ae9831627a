"""Fine-tuning with regularizers, under pruning masks."""
