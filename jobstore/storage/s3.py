"""S3-compatible storage through boto3 (AWS, MinIO, moto)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobstore.storage.base import CHUNK, ObjectMissing, check_key, write_file

log = logging.getLogger(__name__)


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


class S3ChunkWriter:
    """One part of a staged multipart upload, spooled to a temp file (memory stays flat) and sent on commit."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str, number: int) -> None:
        self._client, self._bucket, self._key, self._upload_id, self._number = client, bucket, key, upload_id, number
        self._spool: Any = tempfile.SpooledTemporaryFile(max_size=CHUNK)  # noqa: SIM115  (closed in commit/abort)
        self._size = 0

    def write(self, data: bytes) -> None:
        self._spool.write(data)
        self._size += len(data)

    def commit(self) -> dict[str, Any]:
        self._spool.seek(0)
        try:
            resp = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=self._number,
                Body=self._spool,
                ContentLength=self._size,
            )
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(self._key) from None
            raise
        finally:
            self._spool.close()
        return {"PartNumber": self._number, "ETag": resp["ETag"]}

    def abort(self) -> None:
        self._spool.close()


class S3Writer:
    """Multipart upload; S3 shows the object only once the upload completes, so commit is atomic."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self._client, self._bucket, self._key, self._part_size = client, bucket, key, part_size
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self._buf += data
        # Memory stays at one part per upload whatever the object's size.
        while len(self._buf) >= self._part_size:
            self._flush_part(bytes(self._buf[: self._part_size]))
            del self._buf[: self._part_size]

    def _flush_part(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        resp = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def commit(self) -> None:
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buf))
        else:
            if self._buf:
                self._flush_part(bytes(self._buf))
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._buf = bytearray()

    def abort(self) -> None:
        self._buf = bytearray()
        if self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except (ClientError, BotoCoreError):
                log.warning("could not abort multipart upload of %s", self._key, exc_info=True)
            self._upload_id = None


class S3Storage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )
        if create_bucket:
            try:
                self.client.head_bucket(Bucket=bucket)
            except ClientError:
                self.client.create_bucket(Bucket=bucket)

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def open_writer(self, key: str) -> S3Writer:
        return S3Writer(self.client, self.bucket, self._k(key), self.part_size)

    def put_file(self, key: str, path: Path) -> None:
        write_file(self.open_writer(key), path)

    def get_file(self, key: str, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._k(key), str(dest))
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from None
            raise

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"])
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from None
            raise

    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key), Range=rng)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from None
            raise

        def gen() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return gen()

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
            return True
        except ObjectMissing:
            return False

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        full = self.prefix + prefix
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True}
            )

    def begin_staged(self, upload_id: str, key: str) -> str | None:
        upload: str = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._k(key))["UploadId"]
        return upload

    def open_chunk(self, upload_id: str, key: str, ref: str | None, offset: int, number: int) -> S3ChunkWriter:
        if ref is None:
            raise ObjectMissing(key)
        # Sending a part number again replaces that part: a retried chunk is idempotent.
        return S3ChunkWriter(self.client, self.bucket, self._k(key), ref, number)

    def finish_staged(
        self, upload_id: str, key: str, ref: str | None, parts: Sequence[dict[str, Any]], size: int
    ) -> None:
        if ref is None:
            raise ObjectMissing(key)
        ordered: Any = sorted(
            ({"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts), key=lambda p: int(p["PartNumber"])
        )
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._k(key), UploadId=ref, MultipartUpload={"Parts": ordered}
            )
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(key) from None
            raise

    def abort_staged(self, upload_id: str, key: str, ref: str | None) -> None:
        if ref is None:
            return
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=ref)
        except ClientError as exc:
            if not _missing(exc):
                raise

    def check(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except (ClientError, BotoCoreError):
            log.warning("S3 bucket %s not reachable", self.bucket, exc_info=True)
            return False
