"""Content-addressed storage of uploaded checkpoint states, kept until their segment's verdict.

A blob's name is the SHA-256 of its bytes, computed while the upload arrived (gateway.uploads.receive_upload).
Two stores behind one interface (`BlobStore`), chosen by GPUPROOF_BLOB_STORE:

- `local` (the default): files under DATA_DIR/uploads, written to a temporary file that is flushed and
  renamed into place, so a crash leaves either the whole blob or none. One node, or replicas that share
  the directory over a network filesystem.
- `s3`: objects `<GPUPROOF_S3_PREFIX><sha256>` in a bucket of any S3-compatible service (AWS S3, MinIO,
  Cloudflare R2, Google Cloud Storage's XML API), through boto3 (the `s3` extra). Uploads go up from the
  spooled file in 8 MiB parts (multipart), downloads stream to the client in 1 MiB pieces: no body is ever
  held in memory whole. An object appears only when its upload completes (S3 semantics), so a crash also
  leaves the whole blob or none.

Either way the incoming spool is local disk (DATA_DIR/uploads/.incoming), and a quota bounds what is
stored: GPUPROOF_BLOB_QUOTA_BYTES and GPUPROOF_BLOB_QUOTA_OBJECTS (0: no limit). The quota reads the
store itself, so replicas sharing it share the quota; uploads racing on different replicas can overshoot
it by at most their own sizes (each checks before it stores).
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpuproof.kernels.errors import GpuproofError, InvalidParameter
from gpuproof.verifier.ids import is_hex

if TYPE_CHECKING:
    from gpuproof.gateway.settings import Settings

PART_BYTES = 8 * 1024 * 1024  # multipart part size: what an S3 upload holds in memory at a time
READ_BYTES = 1024 * 1024  # a streamed download's piece


class QuotaExceeded(GpuproofError):
    """Storing a blob would take the store over its quota (the gateway answers 507)."""


class StoreUnavailable(GpuproofError):
    """The blob store could not be reached or refused the request (the gateway answers 503)."""


@dataclass(frozen=True)
class StoredBlob:
    digest: str
    size: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True)
class Usage:
    bytes: int
    objects: int


@dataclass
class BlobReader:
    """An open blob: `path` when it is a local file (served with sendfile), else `chunks()` streams it."""

    size: int
    path: Path | None = None
    _body: object = None

    def chunks(self) -> Iterator[bytes]:
        """The blob in READ_BYTES pieces; closes the underlying stream when done or abandoned."""
        if self.path is not None:
            with open(self.path, "rb") as fh:
                while piece := fh.read(READ_BYTES):
                    yield piece
            return
        try:
            yield from self._body.iter_chunks(READ_BYTES)  # type: ignore[attr-defined]
        finally:
            self._body.close()  # type: ignore[attr-defined]


def check_digest(digest: str) -> str:
    if not is_hex(digest, 32):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return digest


class BlobStore(abc.ABC):
    """Blobs by SHA-256. `incoming` is the local directory uploads are spooled to before `put_file`."""

    def __init__(self, incoming: Path, quota_bytes: int = 0, quota_objects: int = 0) -> None:
        self.incoming, self.quota_bytes, self.quota_objects = incoming, quota_bytes, quota_objects

    @abc.abstractmethod
    def has(self, digest: str) -> bool: ...

    @abc.abstractmethod
    def _store(self, src: Path, digest: str) -> None: ...

    @abc.abstractmethod
    def open(self, digest: str) -> BlobReader | None:
        """The blob for reading, or None when it is not stored."""

    @abc.abstractmethod
    def delete(self, digest: str) -> None:
        """Remove the blob; nothing happens if it is not stored."""

    @abc.abstractmethod
    def list(self) -> Iterator[StoredBlob]:
        """Every stored blob (not the incoming spool)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise if the store cannot be reached (readiness)."""

    def usage(self) -> Usage:
        size = count = 0
        for blob in self.list():
            size, count = size + blob.size, count + 1
        return Usage(size, count)

    def put_file(self, src: Path, digest: str) -> bool:
        """Store `src`, whose SHA-256 is `digest` (computed while it was written), under that name, unless
        it is stored already (content addressing: False then). Raises QuotaExceeded if it would not fit.
        The local store moves `src` (same filesystem); the S3 store uploads it and leaves it."""
        check_digest(digest)
        if self.has(digest):
            return False
        if self.quota_bytes or self.quota_objects:
            size, used = src.stat().st_size, self.usage()
            if self.quota_objects and used.objects + 1 > self.quota_objects:
                raise QuotaExceeded(f"the upload store holds {used.objects} blobs, its quota is "
                                    f"{self.quota_objects} (GPUPROOF_BLOB_QUOTA_OBJECTS)")
            if self.quota_bytes and used.bytes + size > self.quota_bytes:
                raise QuotaExceeded(f"the upload store holds {used.bytes} bytes; {size} more would pass its quota "
                                    f"of {self.quota_bytes} (GPUPROOF_BLOB_QUOTA_BYTES)")
        self._store(src, digest)
        return True


class LocalBlobStore(BlobStore):
    """Blobs as files ROOT/ab/abcd... (the first two hex digits as a directory)."""

    def __init__(self, root: Path, quota_bytes: int = 0, quota_objects: int = 0) -> None:
        super().__init__(root / ".incoming", quota_bytes, quota_objects)
        self.root = root

    @classmethod
    def in_data_dir(cls, data_dir: Path, quota_bytes: int = 0, quota_objects: int = 0) -> LocalBlobStore:
        return cls(data_dir / "uploads", quota_bytes, quota_objects)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def _store(self, src: Path, digest: str) -> None:
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, target)

    def open(self, digest: str) -> BlobReader | None:
        path = self.path(digest)
        try:
            return BlobReader(path.stat().st_size, path)
        except FileNotFoundError:
            return None

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def list(self) -> Iterator[StoredBlob]:
        for path in self.root.glob("[0-9a-f][0-9a-f]/*"):
            if is_hex(path.name, 32):
                with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                    st = path.stat()
                    yield StoredBlob(path.name, st.st_size, st.st_mtime)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


class S3BlobStore(BlobStore):
    """Blobs as objects PREFIX + sha256 in an S3-compatible bucket (which must exist)."""

    def __init__(self, bucket: str, incoming: Path, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, quota_bytes: int = 0, quota_objects: int = 0,
                 timeout_s: float = 10.0) -> None:
        try:
            import boto3
            import boto3.s3.transfer
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise InvalidParameter("GPUPROOF_BLOB_STORE", "'s3' needs boto3, which is not installed: "
                                   "pip install 'gpuproof[s3]'") from None
        super().__init__(incoming, quota_bytes, quota_objects)
        self.bucket, self.prefix = bucket, prefix
        config = botocore.config.Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                                        retries={"max_attempts": 3, "mode": "standard"})
        # one client for the process: boto3 clients are thread-safe (sessions are not)
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region,
                                                     config=config)
        self._error = botocore.exceptions.ClientError
        self._failures = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                          boto3.exceptions.Boto3Error)
        # multipart from the file: parts of PART_BYTES, two in flight, so an upload holds ~16 MiB at most
        self._transfer = boto3.s3.transfer.TransferConfig(multipart_threshold=PART_BYTES,
                                                          multipart_chunksize=PART_BYTES, max_concurrency=2)

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._failures as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket}: {what} failed ({type(exc).__name__}: "
                                   f"{str(exc)[:200]})") from exc

    def key(self, digest: str) -> str:
        return self.prefix + check_digest(digest)

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def has(self, digest: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except self._error as exc:
            if self._missing(exc):
                return False
            raise StoreUnavailable(f"S3 bucket {self.bucket}: HEAD {digest} failed ({exc})") from exc
        except self._failures as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket}: HEAD {digest} failed ({exc})") from exc
        return True

    def _store(self, src: Path, digest: str) -> None:
        with self._calling(f"upload of {digest}"):
            self.client.upload_file(str(src), self.bucket, self.key(digest), Config=self._transfer,
                                    ExtraArgs={"ContentType": "application/octet-stream",
                                               "Metadata": {"sha256": digest}})

    def open(self, digest: str) -> BlobReader | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))
        except self._error as exc:
            if self._missing(exc):
                return None
            raise StoreUnavailable(f"S3 bucket {self.bucket}: GET {digest} failed ({exc})") from exc
        except self._failures as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket}: GET {digest} failed ({exc})") from exc
        return BlobReader(int(answer["ContentLength"]), _body=answer["Body"])

    def delete(self, digest: str) -> None:
        with self._calling(f"DELETE {digest}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))  # no error if absent

    def list(self) -> Iterator[StoredBlob]:
        with self._calling("LIST"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if is_hex(name, 32):
                        yield StoredBlob(name, int(obj["Size"]), obj["LastModified"].timestamp())

    def check(self) -> None:
        with self._calling("HEAD bucket"):
            self.client.head_bucket(Bucket=self.bucket)


def open_store(settings: Settings) -> BlobStore:
    """The store GPUPROOF_BLOB_STORE names, with the configured quota."""
    quota = {"quota_bytes": settings.blob_quota_bytes, "quota_objects": settings.blob_quota_objects}
    local = LocalBlobStore.in_data_dir(settings.data_dir, **quota)
    if settings.blob_store == "local":
        return local
    if not settings.s3_bucket:
        raise InvalidParameter("GPUPROOF_S3_BUCKET", "GPUPROOF_BLOB_STORE=s3 needs a bucket name")
    return S3BlobStore(settings.s3_bucket, local.incoming, settings.s3_prefix, settings.s3_endpoint_url,
                       settings.s3_region, **quota)


def stale_unnamed(blobs: Iterator[StoredBlob], named: set[str], now: float, min_age_s: float) -> list[str]:
    """The blobs no open audit names and older than `min_age_s` (left by a crash between storing a blob and
    naming it, or a refused answer): the maintenance sweep deletes them."""
    return [b.digest for b in blobs if b.digest not in named and b.modified < now - min_age_s]

