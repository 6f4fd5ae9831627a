"""Artifact and upload storage: a local directory or S3."""

from __future__ import annotations

from jobstore.settings import Settings
from jobstore.storage.base import ChunkWriter, ObjectMissing, ObjectWriter, Storage, StorageError


def make_storage(settings: Settings) -> Storage:
    """The storage the settings select."""
    if settings.storage_backend == "s3":
        from jobstore.storage.s3 import S3Storage

        assert settings.s3_bucket is not None
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            part_size=settings.s3_part_size,
            create_bucket=settings.s3_create_bucket,
        )
    from jobstore.storage.local import LocalStorage

    return LocalStorage(settings.storage_dir)


__all__ = ["ChunkWriter", "ObjectMissing", "ObjectWriter", "Storage", "StorageError", "make_storage"]
