"""prunekit's HTTP service: FastAPI app, job store, storage. Never imports torch, never unpickles."""
