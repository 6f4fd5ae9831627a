"""prunekit worker: the compression engine (worker.engine) and the Celery tasks that wrap it."""
