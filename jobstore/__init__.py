"""The job store shared by the API and the workers: settings, database, storage, queue, webhooks, lifecycle.

Torch-free and FastAPI-free; `service` (the API) and `worker` (the Celery tasks) both import it, never each other.
"""
