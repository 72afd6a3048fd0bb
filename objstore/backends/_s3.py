"""Conditional object I/O on S3 (and S3-compatible stores) through aiobotocore.

s3fs is used only to build the client: it resolves credentials, region, endpoint and the
``storage_options`` users already know from fsspec. Every request then goes straight to the
raw aiobotocore client, because s3fs's own layer retries behind our back and folds
precondition failures into generic ``OSError``\\ s:

* create-if-absent is one ``PutObject`` with ``If-None-Match: *``; compare-and-swap is one
  ``PutObject`` with ``If-Match: <etag>``; a conditional delete is ``DeleteObject`` with
  ``If-Match``. The version token is the ETag exactly as S3 returns it (with its quotes).
* large streamed creates are multipart uploads completed with ``If-None-Match: *``, so the
  create-if-absent check happens atomically on completion.
* botocore's own retries are off by default (``total_max_attempts=1``): the
  :class:`~objstore.backends.AsyncBackend` retries, and it must see every attempt to tell a
  real conflict from the echo of its own earlier attempt whose response was lost.
* an aiobotocore client belongs to the event loop that created it, so one client is made per
  running loop (objstore's private sync loop, the user's loops, a child process's loop).

Errors are translated once, here, by operation: see :func:`translate_error`. Where an
S3-compatible server answers differently from AWS, the transport absorbs the difference so
callers see AWS's semantics; each is checked on moto and SeaweedFS by ``tests/test_seaweedfs.py``:

* SeaweedFS answers 412 instead of 404 to a conditional write or delete (``If-Match``) of a
  missing key. A 412 on CAS or a conditional delete is therefore followed by one HEAD: a
  missing key makes the CAS :class:`NotFoundError` and the delete a no-op, as on AWS. (A
  failed conditional request changes nothing, so reporting what the HEAD saw is a correct
  answer for a request made at that moment.) On AWS this costs one HEAD per lost CAS.

Known limitation, not fixable by a client: SeaweedFS (4.48) enforces ``If-None-Match: *`` on
CompleteMultipartUpload one request at a time but not atomically: concurrent completions of
one key can all succeed (the last one stays). Its single PutObject creates, CAS and conditional
deletes are atomic. On SeaweedFS, two writers racing for one key with streams larger than one
part can therefore both be told they created it; the object holds the last one's data.

Known limitation of SeaweedFS listings (4.48), which walk its directory tree instead of sorting
keys: pages come in tree order (``a/b/x`` before ``a/b-1``; :meth:`S3Transport.list` sorts
them, and every key is listed), and a ``StartAfter`` that names a "directory" skips every key
under it (after ``c/002`` it omits ``c/002/m``). :meth:`S3Transport.list_after` is therefore
exact there only when ``start_after`` is not itself a key prefix followed by ``/`` and no
name beside a directory sorts before ``/`` (``-``, ``.``, ``%``...); the stores' markers
(``checkpoints/checkpoint_<id>/~``) meet both conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import botocore.exceptions
import botocore.parsers
import s3fs

from objstore._keys import validate_prefix
from objstore.backends._base import (
    Buffer,
    ObjectInfo,
    ObjectListing,
    Transport,
    upload_in_chunks,
)
from objstore.backends._loop_clients import LoopClients
from objstore.backends._retry import RetryPolicy
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    StoreNotFoundError,
    TransientStorageError,
)

__all__ = ["ACCEPTED_OPTIONS", "S3Transport", "translate_error", "validate_bucket_name"]

logger = logging.getLogger(__name__)

ACCEPTED_OPTIONS = frozenset(
    {
        # the transport's own
        "part_size",
        "parts_in_flight",
        # what s3fs uses to build the client (credentials, endpoint, botocore configuration)
        "anon",
        "endpoint_url",
        "key",
        "secret",
        "token",
        "username",
        "password",
        "profile",
        "session",
        "use_ssl",
        "client_kwargs",
        "config_kwargs",
        "cache_regions",
    }
)
"""The ``storage_options`` an S3 transport uses. Others (s3fs's ``s3_additional_kwargs``,
``requester_pays``, caching and block-size options...) would be silently ignored, because
requests go to the client directly, so they are refused."""

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3's smallest allowed multipart part (every part but the last)."""

DEFAULT_PART_SIZE = 16 * 1024 * 1024
DEFAULT_PARTS_IN_FLIGHT = 4
MAX_PARTS = 10_000
_STREAM_READ = 1024 * 1024
"""The most bytes one piece of :meth:`S3Transport.get_range_stream` holds (what the HTTP
body has buffered, up to this)."""
"""S3's largest allowed part number."""

Operation = Literal["read", "put", "create", "cas", "delete", "list", "multipart"]
"""What a request was for; the same HTTP status means different things for each.

``read``: GET/HEAD. ``put``: unconditional write. ``create``: If-None-Match write (PutObject
or CompleteMultipartUpload). ``cas``: If-Match write. ``delete``: DeleteObject, conditional
or not. ``list``: ListObjectsV2. ``multipart``: create/upload-part/abort of a multipart upload.
"""

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchUpload"})
"""``NoSuchUpload``: a multipart upload that is gone, e.g. completed by an earlier attempt."""
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})
_TRANSIENT_CODES = frozenset(
    {
        "ConditionalRequestConflict",  # 409: a concurrent conditional request; retry
        "OperationAborted",  # 409: a conflicting operation is in progress
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "RequestTimeout",  # 400: the socket was idle too long
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)
_REFUSED_CODES = frozenset(
    {
        "ConditionalRequestConflict",
        "OperationAborted",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "RequestTimeout",
    }
)
"""Transient codes of a request the store refused without applying it (throttled, in
conflict with a concurrent request, or not fully received): ``may_have_landed=False``."""
_NOT_SENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # connect failures, connect timeouts, proxy, TLS
    aiohttp.ClientConnectorError,
    ConnectionRefusedError,
)
"""Failures before a request reached the store: ``may_have_landed=False``."""
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # connect failures, connect timeouts, proxy errors
    botocore.exceptions.HTTPClientError,  # read timeouts, closed connections, broken streams
    botocore.exceptions.IncompleteReadError,
    botocore.parsers.ResponseParserError,  # a response cut short mid-body
    aiohttp.ClientError,  # payload errors, server disconnects
    ConnectionError,  # resets and refusals surfacing as builtins
    TimeoutError,  # asyncio.TimeoutError is TimeoutError since 3.11
)


def translate_error(
    exc: BaseException,
    operation: Operation,
    key: str,
    version: str | None = None,
) -> Exception | None:
    """Map a botocore/aiohttp error of ``operation`` on ``key`` to the objstore tree.

    Returns the error to raise (the caller chains ``exc`` as its cause), or ``None`` when
    ``exc`` means nothing objstore understands and must propagate unchanged (credentials,
    access denied, a malformed request).

    * 404 ``NoSuchKey``/``NotFound`` -> :class:`NotFoundError`.
    * ``NoSuchBucket`` -> :class:`StoreNotFoundError`, which is *not* a ``NotFoundError``: a
      mistyped bucket must not look like an empty store.
    * 412 on ``create`` -> :class:`AlreadyExistsError`; on ``cas`` or ``delete`` ->
      :class:`PreconditionFailedError` (a missing object under If-Match is a 404, above, on
      AWS; SeaweedFS answers 412, which :class:`S3Transport` disambiguates with a HEAD).
    * 501 ``NotImplemented`` -> :class:`NotSupportedError` (a gateway without conditional
      requests).
    * other 5xx, 429, throttling, 409 ``ConditionalRequestConflict``, timeouts and dropped
      connections -> :class:`TransientStorageError`; ``may_have_landed=False`` only for a
      request refused unapplied (:data:`_REFUSED_CODES`, 429) or never sent (a failed
      connect).
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        return _translate_client_error(exc, operation, key, version)
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return TransientStorageError(
            f"{operation} {key!r}: {type(exc).__name__}: {exc}",
            may_have_landed=not isinstance(exc, _NOT_SENT_EXCEPTIONS),
        )
    return None


def _translate_client_error(
    exc: botocore.exceptions.ClientError,
    operation: Operation,
    key: str,
    version: str | None,
) -> Exception | None:
    response: dict[str, Any] = exc.response or {}
    error: dict[str, Any] = response.get("Error") or {}
    code = str(error.get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else None
    detail = f"{operation} {key!r}: {code or 'error'} (HTTP {status})"

    if code == "NotImplemented" or status == 501:
        # S3-compatible stores answer 501 to conditional headers they do not support.
        return NotSupportedError(f"{detail}: the store does not support this request")
    if code in _TRANSIENT_CODES or status == 429 or (status is not None and status >= 500):
        return TransientStorageError(
            detail, may_have_landed=not (code in _REFUSED_CODES or status == 429)
        )
    if code == "NoSuchBucket":
        bucket = str(error.get("BucketName") or "")
        return StoreNotFoundError(
            f"s3://{bucket}", f"{detail}: bucket {bucket or '(unnamed)'!r} does not exist"
        )
    if code in _NOT_FOUND_CODES or (status == 404 and not code):
        return NotFoundError(key)
    if code in _PRECONDITION_CODES or status == 412:
        if operation == "create":
            return AlreadyExistsError(key)
        if operation in ("cas", "delete"):
            return PreconditionFailedError(key, expected_version=version)
    return None


_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def validate_bucket_name(bucket: object) -> None:
    """Check that ``bucket`` can name an S3 bucket.

    S3's rules: 3 to 63 characters of lowercase letters, digits, dots and hyphens, starting
    and ending with a letter or digit, no ``..``, not an IP address. Buckets created in
    us-east-1 before 2018 may also hold capitals and underscores and run to 255 characters,
    so those are accepted too; anything else could never name a bucket and is a usage error
    rather than a storage error.

    Raises:
        ValueError: unless ``bucket`` can name an S3 bucket (it breaks the rules above, or is an IP
            address).
    """
    if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return
    raise ValueError(f"invalid S3 bucket name {bucket!r}: not an IP address")


@contextlib.contextmanager
def _translated(operation: Operation, key: str, version: str | None = None) -> Iterator[None]:
    """Re-raise errors from the block translated by :func:`translate_error`, cause kept."""
    try:
        yield
    except Exception as exc:
        translated = translate_error(exc, operation, key, version)
        if translated is None:
            raise
        raise translated from exc


@dataclass(frozen=True, slots=True)
class _Client:
    """An aiobotocore client and the s3fs filesystem that made it (which must stay alive:
    s3fs closes the client when the filesystem is collected)."""

    fs: Any
    s3: Any


async def _close_client(client: _Client, loop: asyncio.AbstractEventLoop) -> None:
    """Close one loop's client.

    Called on the client's own loop, or on any loop once the client's loop has closed: aiohttp
    then only marks its sessions closed (the sockets went with the loop), which keeps it from
    reporting "Unclosed client session" when the client is collected.
    """
    await client.s3.close()


_CLIENTS: LoopClients[_Client] = LoopClients("S3", _close_client)
"""The aiobotocore clients of this process, one per (event loop, options, endpoint
environment), shared by every S3 transport opened with the same options."""


_ENDPOINT_ENVIRONMENT = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_PROFILE",
)
"""Environment variables from which botocore takes the endpoint when the options name none."""


def _options_key(bucket: str, options: dict[str, Any]) -> str:
    """A stable identity of a client configuration (per bucket only when regions differ).

    It includes the environment that chooses the endpoint, as it is when the transport is
    opened: transports opened under different ``AWS_ENDPOINT_URL`` values talk to different
    servers and must not share a client.
    """
    scope = bucket if options.get("cache_regions") else ""
    environment = {name: os.environ.get(name) for name in _ENDPOINT_ENVIRONMENT}
    return json.dumps([scope, options, environment], sort_keys=True, default=repr)


class S3Transport(Transport):
    """Objects under ``s3://bucket/prefix``, written with S3's conditional requests.

    Args:
        bucket: the bucket name.
        prefix: the root inside the bucket (``""`` for the whole bucket); keys are relative
            to it and a listing never leaves it.
        part_size: bytes per part of a streamed multipart create (at least 5 MiB, S3's
            minimum); streams shorter than one part are a single conditional PUT.
        parts_in_flight: how many parts a streamed create uploads at once; memory stays
            bounded by about ``(parts_in_flight + 1) * part_size``.
        **storage_options: passed to :class:`s3fs.S3FileSystem` to build the client
            (``endpoint_url``, ``key``, ``secret``, ``client_kwargs``, ``config_kwargs``, ...;
            :data:`ACCEPTED_OPTIONS`; others raise ``ValueError``). Without them the usual
            AWS environment applies, including ``AWS_ENDPOINT_URL``. Unless
            ``config_kwargs["retries"]`` is given, botocore's retries are disabled because
            objstore retries itself (see the module docstring).

    Capabilities: ``single_put_limit`` is ``part_size`` (a larger object goes multipart) and
    streamed creates hold about ``(parts_in_flight + 1) * part_size`` bytes.
    """

    scheme = "s3"
    bounded_streaming = True

    #: Keys per ListObjectsV2 page (S3's maximum; tests lower it to exercise pagination).
    list_page_size = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        parts_in_flight: int = DEFAULT_PARTS_IN_FLIGHT,
        **storage_options: Any,
    ) -> None:
        validate_bucket_name(bucket)
        unknown = sorted(set(storage_options) - ACCEPTED_OPTIONS)
        if unknown:
            raise ValueError(
                f"storage option(s) {', '.join(unknown)} are not used by the S3 transport; it "
                f"accepts {', '.join(sorted(ACCEPTED_OPTIONS))}"
            )
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if parts_in_flight < 1:
            raise ValueError("parts_in_flight must be at least 1")
        self._bucket = bucket
        self._prefix = validate_prefix(prefix.strip("/"))
        self._part_size = part_size
        self._parts_in_flight = parts_in_flight
        options = dict(storage_options)
        config_kwargs = dict(options.get("config_kwargs") or {})
        config_kwargs.setdefault("retries", {"total_max_attempts": 1})
        options["config_kwargs"] = config_kwargs
        self._storage_options = options
        self.single_put_limit = part_size
        self._seat = _CLIENTS.seat(_options_key(bucket, options), self._build_client)

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        """The bucket this transport writes to."""
        return self._bucket

    def __reduce__(self) -> tuple[Any, ...]:
        # Clients and locks do not cross processes; a child rebuilds them on first use.
        options = dict(self._storage_options)
        options["part_size"] = self._part_size
        options["parts_in_flight"] = self._parts_in_flight
        return (_rebuild, (self._bucket, self._prefix, options))

    # -- keys and clients ----------------------------------------------------------------------

    def _full_key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _relative_key(self, full_key: str) -> str:
        return full_key[len(self._prefix) + 1 :] if self._prefix else full_key

    async def _build_client(self) -> _Client:
        fs = s3fs.S3FileSystem(asynchronous=True, skip_instance_cache=True, **self._storage_options)
        await fs.set_session()
        return _Client(fs, await fs.get_s3(self._bucket))

    async def _client(self) -> Any:
        """The aiobotocore client for the running loop, shared with other transports."""
        return (await self._seat.client()).s3

    # -- reads --------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[bytes, str]:
        client = await self._client()
        with _translated("read", key):
            response = await client.get_object(Bucket=self._bucket, Key=self._full_key(key))
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data, str(response["ETag"])

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        client = await self._client()
        try:
            with _translated("read", key):
                response = await client.get_object(
                    Bucket=self._bucket, Key=self._full_key(key), Range=f"bytes={start}-{end - 1}"
                )
                async with response["Body"] as body:
                    data: bytes = await body.read()
        except botocore.exceptions.ClientError as exc:
            # 416: the object exists but ends before ``start`` (or is empty).
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416:
                return b""
            raise
        if "ContentRange" not in response:
            # A server that ignores Range sends the whole object; honour the contract anyway.
            return data[start:end]
        return data

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        """One ranged ``GetObject`` whose body is handed on as it arrives (pieces of at most
        :data:`_STREAM_READ` bytes), instead of being joined into one buffer first.

        Raises:
            ClientError: an S3 error objstore does not translate (access denied, a malformed
                request), as :meth:`get_range` lets it through.
        """
        client = await self._client()
        try:
            with _translated("read", key):
                response = await client.get_object(
                    Bucket=self._bucket, Key=self._full_key(key), Range=f"bytes={start}-{end - 1}"
                )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416:
                return  # the object ends before ``start`` (or is empty)
            raise
        async with response["Body"] as body:
            if "ContentRange" not in response:
                # A server that ignores Range sends the whole object; honour the contract.
                with _translated("read", key):
                    data: bytes = await body.read()
                yield data[start:end]
                return
            while True:
                with _translated("read", key):
                    piece: bytes = await body.read(_STREAM_READ)
                if not piece:
                    return
                yield piece

    async def head(self, key: str) -> ObjectInfo:
        client = await self._client()
        with _translated("read", key):
            response = await client.head_object(Bucket=self._bucket, Key=self._full_key(key))
        modified = response.get("LastModified")
        return ObjectInfo(
            key,
            int(response["ContentLength"]),
            str(response["ETag"]),
            modified.timestamp() if modified is not None else None,
        )

    async def list(self, prefix: str) -> ObjectListing:
        return await self._list(prefix, None, None)

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        """One ``ListObjectsV2`` with ``StartAfter`` (more only if ``limit`` exceeds a page)."""
        return await self._list(prefix, start_after, limit)

    async def _list(self, prefix: str, start_after: str | None, limit: int | None) -> ObjectListing:
        client = await self._client()
        # A trailing "/" makes the prefix a whole path segment: "a/b" never lists "a/bc".
        base = self._full_key(prefix) if prefix else self._prefix
        listed = base + "/" if base else ""
        items: list[ObjectInfo] = []
        token: str | None = None
        with _translated("list", prefix):
            while limit is None or len(items) < limit:
                kwargs: dict[str, Any] = {
                    "Bucket": self._bucket,
                    "Prefix": listed,
                    "MaxKeys": min(self.list_page_size, limit or self.list_page_size),
                }
                if start_after is not None:
                    kwargs["StartAfter"] = self._full_key(start_after)
                if token:
                    kwargs["ContinuationToken"] = token
                page = await client.list_objects_v2(**kwargs)
                for entry in page.get("Contents", ()):
                    full_key = str(entry["Key"])
                    if full_key.endswith("/"):
                        continue  # a "directory marker" some tools create; not an object
                    modified = entry.get("LastModified")
                    items.append(
                        ObjectInfo(
                            self._relative_key(full_key),
                            int(entry["Size"]),
                            str(entry["ETag"]) if entry.get("ETag") else None,
                            modified.timestamp() if modified is not None else None,
                        )
                    )
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
        items.sort(key=lambda info: info.key)
        return items[:limit] if limit is not None else items

    # -- writes -------------------------------------------------------------------------------

    async def _put_object(
        self,
        operation: Operation,
        key: str,
        data: Buffer,
        version: str | None = None,
        **conditions: str,
    ) -> str:
        client = await self._client()
        with _translated(operation, key, version):
            response = await client.put_object(
                Bucket=self._bucket, Key=self._full_key(key), Body=_body(data), **conditions
            )
        return str(response["ETag"])

    async def put(self, key: str, data: Buffer) -> str:
        return await self._put_object("put", key, data)

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        return await self._put_object("create", key, data, IfNoneMatch="*")

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        """CAS; a missing key is :class:`NotFoundError` also where the server answers 412.

        Raises:
            NotFoundError: if ``key`` does not exist (whether the server answers 404 or 412).
            PreconditionFailedError: if ``key`` exists but its version is not ``version``.
        """
        try:
            return await self._put_object("cas", key, data, version, IfMatch=version)
        except PreconditionFailedError as exc:
            if await self._is_missing(key):  # SeaweedFS: 412 where AWS answers 404
                raise NotFoundError(key) from exc
            raise

    async def delete(self, key: str, version: str | None = None) -> None:
        """Delete (with ``version``: only if unchanged); a missing key is already deleted.

        Raises:
            PreconditionFailedError: if ``version`` is given and the object exists at another
                version.
        """
        client = await self._client()
        conditions = {"IfMatch": version} if version is not None else {}
        try:
            with _translated("delete", key, version):
                await client.delete_object(
                    Bucket=self._bucket, Key=self._full_key(key), **conditions
                )
        except NotFoundError:
            return  # only conditional deletes report a missing object; either way it is gone
        except PreconditionFailedError:
            if await self._is_missing(key):  # SeaweedFS: 412 where AWS answers 404
                return
            raise

    async def _is_missing(self, key: str) -> bool:
        """Whether ``key`` is absent now (one HEAD), to tell a 412 of a missing key from a
        version mismatch on servers that do not answer 404 there."""
        try:
            await self.head(key)
        except NotFoundError:
            return True
        return False

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        """Create the object from a stream; multipart once it outgrows one part.

        Parts are uploaded as they fill, at most ``parts_in_flight`` at once (the stream is
        not read further while that many are in flight), and the upload is completed with
        ``If-None-Match: *``: if the key was created meanwhile, S3 refuses the completion and
        this raises :class:`AlreadyExistsError`. On any failure the upload is aborted.
        ``retry`` (the backend's policy) retries the start, each part and the completion; a
        stream of at most one part is one conditional PUT, retried by it too.
        """
        policy = retry or RetryPolicy(max_attempts=1)
        client = await self._client()
        return await upload_in_chunks(
            self,
            key,
            parts,
            size=self._part_size,
            retry=policy,
            open_upload=lambda: _MultipartUpload(self, key, client, policy),
        )

    async def close(self) -> None:
        """Stop using the clients of every loop this transport has used.

        A client shared with other open transports stays open for them; the last user closes
        it (see :class:`~objstore.backends._loop_clients.ClientSeat`). A later call opens
        fresh clients.
        """
        await self._seat.release()


def multipart_etag(part_etags: list[str]) -> str | None:
    """The ETag S3 gives an object completed from parts with these ETags (the MD5 of their
    MD5s, then ``-N``), or ``None`` when the part ETags are not MD5s (e.g. SSE-KMS)."""
    try:
        digests = b"".join(bytes.fromhex(etag.strip('"')) for etag in part_etags)
    except ValueError:
        return None
    if len(digests) != 16 * len(part_etags):
        return None
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"'


def _body(data: Buffer) -> bytes | bytearray:
    """botocore takes bytes and bytearray as they are; a memoryview must be copied once."""
    return data if isinstance(data, bytes | bytearray) else bytes(data)


def _rebuild(bucket: str, prefix: str, options: dict[str, Any]) -> S3Transport:
    return S3Transport(bucket, prefix, **options)


class _MultipartUpload:
    """One in-progress multipart upload with a bounded number of parts in flight."""

    def __init__(self, transport: S3Transport, key: str, client: Any, retry: RetryPolicy) -> None:
        self._transport = transport
        self._retry = retry
        self._key = key
        self._full_key = transport._full_key(key)
        self._client = client
        self._upload_id: str | None = None
        self._slots = asyncio.Semaphore(transport._parts_in_flight)
        self._tasks: list[asyncio.Task[None]] = []
        self._etags: dict[int, str] = {}

    async def start(self) -> None:
        async def attempt(_: int) -> Any:
            with _translated("multipart", self._key):
                return await self._client.create_multipart_upload(
                    Bucket=self._transport.bucket, Key=self._full_key
                )

        response = await self._retry.call(attempt, description=f"start upload of {self._key}")
        self._upload_id = str(response["UploadId"])

    async def send(self, chunk: bytearray, *, final: bool) -> str | None:
        """Add ``chunk`` as the next part; after the ``final`` one, complete the upload."""
        await self.add_part(chunk)
        return await self.complete() if final else None

    async def add_part(self, data: bytes | bytearray) -> None:
        """Start uploading ``data`` as the next part; waits while too many are in flight.

        Raises:
            ValueError: if the upload would need more than ``MAX_PARTS`` parts (``part_size`` is too
                small for the data).
        """
        number = len(self._tasks) + 1
        if number > MAX_PARTS:
            raise ValueError(f"{self._key!r} needs more than {MAX_PARTS} parts; raise part_size")
        self._raise_failed()
        await self._slots.acquire()
        self._tasks.append(asyncio.create_task(self._upload(number, data)))

    async def _upload(self, number: int, data: bytes | bytearray) -> None:
        async def attempt(_: int) -> Any:
            with _translated("multipart", self._key):
                return await self._client.upload_part(
                    Bucket=self._transport.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=data,
                )

        try:
            # Re-uploading a part number replaces it, so parts are safe to retry here, where
            # the stream they came from cannot be replayed.
            response = await self._retry.call(
                attempt, description=f"upload part {number} of {self._key}"
            )
            self._etags[number] = str(response["ETag"])
        finally:
            self._slots.release()

    def _raise_failed(self) -> None:
        """Surface a failed part early instead of uploading the rest of the stream."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def complete(self) -> str:
        """Wait for every part, then complete the upload only if the key is still absent."""
        await asyncio.gather(*self._tasks)
        numbers = sorted(self._etags)
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in numbers]
        expected = multipart_etag([self._etags[n] for n in numbers])

        async def attempt(number: int) -> str:
            try:
                with _translated("create", self._key):
                    response = await self._client.complete_multipart_upload(
                        Bucket=self._transport.bucket,
                        Key=self._full_key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    )
                return str(response["ETag"])
            except (AlreadyExistsError, NotFoundError):
                # After a lost response the upload may have completed: then the object's
                # ETag is the one S3 derives from exactly our parts (NoSuchUpload or 412).
                if number > 1 and expected is not None:
                    with contextlib.suppress(NotFoundError):
                        if (await self._transport.head(self._key)).version == expected:
                            return expected
                raise

        etag = await self._retry.call(attempt, description=f"complete upload of {self._key}")
        self._upload_id = None
        return etag

    async def abort(self) -> None:
        """Cancel parts still uploading and abort the upload (best effort, never raises)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._transport.bucket, Key=self._full_key, UploadId=upload_id
            )
        except Exception:
            # Not fatal: a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims it.
            logger.warning(
                "could not abort multipart upload %s of %s", upload_id, self._key, exc_info=True
            )
