"""Resumable uploads: /v1/uploads."""
