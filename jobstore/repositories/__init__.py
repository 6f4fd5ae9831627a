"""SQL for files, jobs and trials: one module per table group."""
