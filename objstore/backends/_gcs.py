"""Google Cloud Storage through gcsfs's session and credentials, with generation preconditions.

gcsfs has no public way to attach ``ifGenerationMatch`` to a write, so this transport speaks the
JSON API itself and borrows from :class:`gcsfs.GCSFileSystem` only what is hard to get right:
the aiohttp session, credentials (token refresh, ``token=``, service accounts, requester-pays
``userProject``) and the endpoint (``STORAGE_EMULATOR_HOST`` or ``endpoint_url=``).

* create-if-absent: a media upload with ``ifGenerationMatch=0``; 412 means the name is taken.
* compare-and-swap: a media upload with ``ifGenerationMatch=<generation>``; on 412 one metadata
  GET tells "the object moved on" (``PreconditionFailedError``) from "it is gone"
  (``NotFoundError``).
* conditional delete: ``DELETE ?ifGenerationMatch=<generation>``, disambiguated the same way.
* version: the object's generation as a decimal string. A media GET returns it in the
  ``x-goog-generation`` header (one request); servers that omit the header (emulators) are read
  with a metadata GET on both sides of the media GET, so data and version always belong together.

Each request is sent exactly once. gcsfs's own retry helper is deliberately bypassed: it would
sleep up to half a minute per call on 5xx, nest under :class:`~objstore.backends.AsyncBackend`'s
retries, and — worst — a conditional write it re-sent after a lost response would come back 412
on what was really our own write, with nobody left to notice. Retrying is the backend's job; it
reads a conflicted object back after a retry to recognise exactly that case.

* streamed create: a resumable upload opened with ``ifGenerationMatch=0`` and sent one chunk
  at a time, so memory holds one chunk, not the object; GCS checks the precondition again when
  the last chunk completes the object, so a key created meanwhile makes it
  :class:`AlreadyExistsError` and nothing is replaced.

aiohttp sessions are bound to the event loop that created them, and objstore runs on several:
the sync facade's private loop, the caller's own loops, a fresh loop in every child process.
Filesystems (one session each) therefore come from the per-loop pool shared with the S3
transport (:mod:`objstore.backends._loop_clients`): one per (running loop, options), shared by
the transports opened with the same options, closed by the last of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import urllib.parse
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import aiohttp
import aiohttp.payload
import yarl
from aiohttp.abc import AbstractStreamWriter

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
    ObjstoreError,
    PreconditionFailedError,
    StoreNotFoundError,
    TransientStorageError,
)

# Must be set before gcsfs is first imported: with the experimental zonal/HNS support enabled,
# gcsfs probes gRPC on every call and each probe waits about a minute without network access.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__all__ = ["ACCEPTED_OPTIONS", "GCSTransport"]

logger = logging.getLogger(__name__)

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CONSISTENT_READ_ATTEMPTS = 5
ACCEPTED_OPTIONS = frozenset(
    {
        # the transport's own
        "chunk_size",
        # what the requests use from gcsfs: credentials, project, endpoint, session, timeout
        "token",
        "project",
        "access",
        "endpoint_url",
        "requester_pays",
        "requests_timeout",
        "session_kwargs",
    }
)
"""The ``storage_options`` a GCS transport uses. gcsfs's others (caching, block sizes,
``asynchronous``/``loop``, which the per-loop pool manages...) would be ignored, so they are
refused."""

RESUMABLE_QUANTUM = 256 * 1024
"""Every chunk of a resumable upload but the last is a multiple of this (GCS's rule)."""
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
# No overall deadline (a large object may take long to stream) but a stalled connection fails.
_DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Requests that name only the bucket, never one object: a 404 means the bucket is missing.
_BUCKET_LEVEL = frozenset({"LIST", "PUT", "PUT-if-absent", "PUT-if-match"})


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


async def _close_filesystem(fs: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close a filesystem's session: on its own loop, or (that loop not running) by dropping
    its connections, which needs no loop."""
    session = getattr(fs, "_session", None)
    if session is None or session.closed:
        return
    if loop is asyncio.get_running_loop():
        await session.close()
    else:
        type(fs).close_session(loop, session)


_FILESYSTEMS: LoopClients[Any] = LoopClients("GCS", _close_filesystem)
"""The gcsfs filesystems of this process, one per (event loop, options), shared by every GCS
transport opened with the same options."""


class _BufferPayload(aiohttp.payload.Payload):
    """A request body over any bytes-like object, sent in slices without copying it.

    aiohttp's own bytes payload hands the whole buffer to the socket at once (the kernel takes
    part, asyncio copies the rest into its write buffer) and warns above 1 MiB; slices with a
    drain between them keep a large checkpoint from being duplicated in memory.
    """

    _SLICE = 1 << 20

    def __init__(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        super().__init__(view, content_type="application/octet-stream")
        self._view = view
        self._size = view.nbytes

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._view.tobytes().decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._view.tobytes()

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        for offset in range(0, view.nbytes, self._SLICE):
            await writer.write(view[offset : offset + self._SLICE])


def _gcsfs_class() -> Any:
    """Import gcsfs lazily, after the environment guard above, and return its plain class.

    ``gcsfs.core.GCSFileSystem`` is used even when gcsfs was imported elsewhere with the
    experimental flag on, so no request of ours ever takes the gRPC probing path.
    """
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs.core

    return gcsfs.core.GCSFileSystem


def _is_emulator(options: Mapping[str, Any]) -> bool:
    """Whether requests will go to a local emulator (plain HTTP), which needs no credentials."""
    endpoint = options.get("endpoint_url")
    if endpoint:
        return str(endpoint).startswith("http://")
    return os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _parse_generation(version: str) -> int | None:
    """The generation a version string denotes, or ``None`` if it cannot be one.

    Generations are positive integers; ``0`` is excluded on purpose because
    ``ifGenerationMatch=0`` means "must not exist" and would turn a CAS into a create.
    """
    if not isinstance(version, str) or not version.isascii() or not version.isdigit():
        return None
    generation = int(version)
    return generation if generation > 0 else None


def _version(value: object, where: str) -> str:
    """The generation a response reports, as objstore's version string.

    Raises:
        ObjstoreError: if the response carries no valid generation.
    """
    try:
        return str(int(str(value)))
    except ValueError as exc:
        raise ObjstoreError(f"GCS {where}: no valid generation in the response") from exc


def _parse_mtime(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _error_message(response: _Response) -> str:
    """GCS's own explanation from a JSON error body, else the start of the raw body."""
    text = response.body.decode("utf-8", errors="replace")
    try:
        error = json.loads(text)["error"]
        message = error if isinstance(error, str) else error.get("message", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = text[:200]
    return f"HTTP {response.status}" + (f": {message}" if message else "")


def _native_error(response: _Response) -> BaseException:
    """The exception gcsfs itself raises for this response: kept as ``__cause__``."""
    from gcsfs.retry import validate_response

    try:
        validate_response(response.status, response.body, response.url)
    except Exception as exc:
        return exc
    return OSError(_error_message(response))


class GCSTransport(Transport):
    """Objects in one GCS bucket, below an optional prefix.

    Args:
        bucket: the bucket name.
        prefix: key prefix inside the bucket (no leading or trailing ``/``); ``""`` for none.
        chunk_size: bytes per request of a streamed create (a multiple of 256 KiB); memory
            holds about one chunk. Streams no longer than one chunk are one media upload.
        **storage_options: passed to :class:`gcsfs.GCSFileSystem` — ``token``, ``project``,
            ``endpoint_url``, ``requester_pays``, ``requests_timeout``, ``session_kwargs``
            (:data:`ACCEPTED_OPTIONS`; others raise ``ValueError``). ``token`` defaults to
            ``"anon"`` when the endpoint is a local emulator (``STORAGE_EMULATOR_HOST`` or an
            ``http://`` ``endpoint_url``).
    """

    scheme = "gs"
    bounded_streaming = True

    #: Objects per listing request (GCS's maximum is 1000).
    page_size: int = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **storage_options: Any,
    ) -> None:
        if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"invalid GCS bucket name {bucket!r}: 3-63 lowercase letters, digits, dots, "
                "hyphens and underscores, starting and ending with a letter or digit"
            )
        unknown = sorted(set(storage_options) - ACCEPTED_OPTIONS)
        if unknown:
            raise ValueError(
                f"storage option(s) {', '.join(unknown)} are not used by the GCS transport; "
                f"it accepts {', '.join(sorted(ACCEPTED_OPTIONS))}"
            )
        if chunk_size < RESUMABLE_QUANTUM or chunk_size % RESUMABLE_QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of {RESUMABLE_QUANTUM}")
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._chunk_size = chunk_size
        self._options = dict(storage_options)
        self._reset_clients()

    def _reset_clients(self) -> None:
        self._bucket_seen = False
        config = json.dumps(
            [self._options, os.environ.get("STORAGE_EMULATOR_HOST")], sort_keys=True, default=repr
        )
        self._seat = _FILESYSTEMS.seat(config, self._new_filesystem)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the configuration: sessions belong to this process's loops."""
        return {
            "bucket": self._bucket,
            "prefix": self._prefix,
            "options": self._options,
            "chunk_size": self._chunk_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._bucket = state["bucket"]
        self._prefix = state["prefix"]
        self._options = state["options"]
        self._chunk_size = state["chunk_size"]
        self._reset_clients()

    @property
    def url(self) -> str:
        return f"gs://{self._bucket}/{self._prefix}" if self._prefix else f"gs://{self._bucket}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- names -------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        """The GCS object name of a transport-relative key."""
        return f"{self._prefix}/{key}" if self._prefix else key

    def _list_prefix(self, prefix: str) -> str:
        """The object-name prefix selecting every key strictly below ``prefix``."""
        parts = [part for part in (self._prefix, prefix.strip("/")) if part]
        return "/".join(parts) + "/" if parts else ""

    # -- filesystems, one per event loop -------------------------------------------------------

    async def _new_filesystem(self) -> Any:
        """Build a gcsfs filesystem (in a worker thread: credential lookup may block)."""
        options = dict(self._options)
        if "token" not in options and _is_emulator(options):
            options["token"] = "anon"
        cls = _gcsfs_class()
        return await asyncio.to_thread(
            lambda: cls(asynchronous=True, skip_instance_cache=True, **options)
        )

    async def _filesystem(self) -> Any:
        """The gcsfs filesystem for the running loop, shared with other transports."""
        return await self._seat.client()

    async def close(self) -> None:
        """Stop using the session of every loop this transport has used.

        A session shared with other open transports stays open for them; the last user closes
        it (see :class:`~objstore.backends._loop_clients.ClientSeat`). A transport used again
        after ``close`` simply opens new sessions.
        """
        await self._seat.release()

    # -- one HTTP request ----------------------------------------------------------------------

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: aiohttp.payload.Payload | None = None,
        upload: bool = False,
    ) -> _Response:
        """Send one JSON-API request (no retries) and return its status, headers and body.

        ``path`` is below ``/storage/v1/`` (``/upload/storage/v1/`` when ``upload``) and already
        percent-encoded. Failures before a status arrives become ``TransientStorageError`` when
        a retry can help; ``what`` names the operation in error messages.
        """
        fs = await self._filesystem()
        base = "/upload/storage/v1/" if upload else "/storage/v1/"
        return await self._send(
            what, method, f"{fs._location}{base}{path}", params=params, headers=headers, data=data
        )

    async def _send(
        self,
        what: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: aiohttp.payload.Payload | None = None,
    ) -> _Response:
        """Send one request to an absolute, already encoded ``url`` (see :meth:`_request`).

        Raises:
            ObjstoreError: if the request is malformed (bad URL or arguments) or fails in a way that
                is not retriable.
            TransientStorageError: on a connection error, timeout or OS error, or a retriable
                failure.
        """
        fs = await self._filesystem()
        timeout = fs.requests_timeout
        try:
            session = await fs._set_session()
            request_headers = fs._get_headers(dict(headers or {}))
            async with session.request(
                method,
                yarl.URL(url, encoded=True),
                params=fs._get_params(dict(params or {})),
                headers=request_headers,
                data=data,
                timeout=_DEFAULT_TIMEOUT if timeout is None else aiohttp.ClientTimeout(timeout),
            ) as response:
                body = await response.read()
                return _Response(response.status, response.headers, body, url)
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise ObjstoreError(f"GCS {what} {url}: bad request: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientStorageError(
                f"GCS {what} {url}: {type(exc).__name__}: {exc}",
                may_have_landed=not isinstance(
                    exc, aiohttp.ClientConnectorError | ConnectionRefusedError
                ),
            ) from exc
        except Exception as exc:
            # Credential refresh failures surface from gcsfs as its own error types.
            from gcsfs.retry import is_retriable

            if is_retriable(exc):
                raise TransientStorageError(f"GCS {what} {url}: {exc}") from exc
            raise ObjstoreError(f"GCS {what} {url}: {exc}") from exc

    async def _fail(self, what: str, key: str, response: _Response) -> NoReturn:
        """Raise the objstore error for an unexpected status, keeping gcsfs's as the cause.

        A 404 is :class:`StoreNotFoundError` when the bucket itself is missing (GCS answers
        404 for a missing object and for a missing bucket alike), else ``NotFoundError``.

        Raises:
            StoreNotFoundError: on a 404 for a bucket-level request or when the bucket is missing.
            NotFoundError: on a 404 for a missing object in an existing bucket.
            TransientStorageError: for a transient status (and when the bucket check cannot tell
                yet).
            ObjstoreError: for any other unexpected status.
        """
        cause = _native_error(response)
        message = f"GCS {what} {self._name(key)!r} in bucket {self._bucket!r}: "
        message += _error_message(response)
        if response.status == 404:
            if what in _BUCKET_LEVEL or await self._bucket_missing():
                raise StoreNotFoundError(
                    f"gs://{self._bucket}", f"{message}: bucket {self._bucket!r} does not exist"
                ) from cause
            raise NotFoundError(key, message) from cause
        if response.status in _TRANSIENT_STATUSES:
            # 429: throttled, not applied; other statuses may come after the write was applied.
            raise TransientStorageError(message, may_have_landed=response.status != 429) from cause
        raise ObjstoreError(message) from cause

    async def _bucket_missing(self) -> bool:
        """Whether the bucket does not exist: one bucket metadata GET after an object's 404,
        until the bucket has been seen once (then a 404 is just a missing object).

        Raises:
            TransientStorageError: if the bucket metadata GET answers a transient status.
        """
        if self._bucket_seen:
            return False
        response = await self._request("bucket GET", "GET", f"b/{_quote(self._bucket)}")
        if response.status == 404:
            return True
        if response.status in _TRANSIENT_STATUSES:  # cannot tell yet: let the caller retry
            raise TransientStorageError(
                f"GCS bucket GET {self._bucket!r}: {_error_message(response)}"
            ) from _native_error(response)
        # 200, or no permission to read bucket metadata (403): the bucket is there.
        self._bucket_seen = response.status in (200, 403)
        return False

    def _object_path(self, key: str) -> str:
        return f"b/{_quote(self._bucket)}/o/{_quote(self._name(key))}"

    # -- reads -------------------------------------------------------------------------------

    async def _metadata(self, what: str, key: str) -> dict[str, Any]:
        response = await self._request(what, "GET", self._object_path(key))
        if response.status != 200:
            await self._fail(what, key, response)
        metadata: dict[str, Any] = json.loads(response.body)
        return metadata

    def _info(self, key: str, metadata: Mapping[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key,
            int(metadata.get("size", 0)),
            _version(metadata.get("generation"), f"metadata of {self._name(key)!r}"),
            _parse_mtime(metadata.get("updated")),
        )

    async def get(self, key: str) -> tuple[bytes, str]:
        response = await self._request(
            "GET", "GET", self._object_path(key), params={"alt": "media"}
        )
        if response.status != 200:
            await self._fail("GET", key, response)
        generation = response.headers.get("x-goog-generation")
        if generation is not None:
            return response.body, _version(generation, f"GET {self._name(key)!r}")
        return await self._get_consistent(key)

    async def _get_consistent(self, key: str) -> tuple[bytes, str]:
        """Read data and generation from a server that does not send ``x-goog-generation``.

        Metadata, media, metadata: if the generation did not change across the media GET,
        the bytes are that generation's (generations are never reused).

        Raises:
            TransientStorageError: if the generation changed across the media GET.
        """
        for _ in range(_CONSISTENT_READ_ATTEMPTS):
            before = (await self._metadata("GET", key))["generation"]
            response = await self._request(
                "GET",
                "GET",
                self._object_path(key),
                params={"alt": "media", "generation": str(before)},
            )
            if response.status == 404:
                continue  # replaced or deleted in between: look again
            if response.status != 200:
                await self._fail("GET", key, response)
            after = (await self._metadata("GET", key))["generation"]
            if str(after) == str(before):
                return response.body, _version(before, f"GET {self._name(key)!r}")
        raise TransientStorageError(
            f"GCS GET {self._name(key)!r}: object kept changing while being read"
        )

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            await self.head(key)
            return b""
        response = await self._request(
            "GET range",
            "GET",
            self._object_path(key),
            params={"alt": "media"},
            headers={"Range": f"bytes={start}-{end - 1}"},
        )
        if response.status == 206:
            return response.body[: end - start]
        if response.status == 200:  # the server ignored the Range header
            return response.body[start:end]
        if response.status == 416:  # range starts at or beyond the end of the object
            return b""
        await self._fail("GET range", key, response)

    async def head(self, key: str) -> ObjectInfo:
        return self._info(key, await self._metadata("HEAD", key))

    async def list(self, prefix: str) -> ObjectListing:
        return await self._list(prefix, None, None)

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        """One listing request with ``startOffset`` (more only if ``limit`` exceeds a page)."""
        return await self._list(prefix, start_after, limit)

    async def _list(self, prefix: str, start_after: str | None, limit: int | None) -> ObjectListing:
        name_prefix = self._list_prefix(prefix)
        root = self._list_prefix("")
        items: list[ObjectInfo] = []
        page_token: str | None = None
        while limit is None or len(items) < limit:
            params = {
                "maxResults": str(min(self.page_size, limit or self.page_size)),
                "fields": "items(name,size,generation,updated),nextPageToken",
            }
            if name_prefix:
                params["prefix"] = name_prefix
            if start_after is not None:
                # startOffset is inclusive; the exact key is dropped below.
                params["startOffset"] = root + start_after
            if page_token:
                params["pageToken"] = page_token
            response = await self._request(
                "LIST", "GET", f"b/{_quote(self._bucket)}/o", params=params
            )
            if response.status != 200:
                await self._fail("LIST", prefix, response)
            self._bucket_seen = True
            page = json.loads(response.body)
            for item in page.get("items") or ():
                name = item.get("name", "")
                # Skip anything outside the prefix (defensive) and folder placeholder objects.
                if not name.startswith(name_prefix) or name.endswith("/"):
                    continue
                info = self._info(name[len(root) :], item)
                if start_after is None or info.key > start_after:
                    items.append(info)
            page_token = page.get("nextPageToken")
            if not page_token:
                break
        items.sort(key=lambda info: info.key)
        return items[:limit] if limit is not None else items

    # -- writes ------------------------------------------------------------------------------

    async def _upload(
        self, what: str, key: str, data: Buffer, if_generation_match: int | None
    ) -> _Response:
        params = {"uploadType": "media", "name": self._name(key)}
        if if_generation_match is not None:
            params["ifGenerationMatch"] = str(if_generation_match)
        return await self._request(
            what,
            "POST",
            f"b/{_quote(self._bucket)}/o",
            params=params,
            headers={"Content-Type": "application/octet-stream"},
            data=_BufferPayload(data),
            upload=True,
        )

    async def _uploaded_version(self, what: str, key: str, response: _Response) -> str:
        if response.status != 200:
            await self._fail(what, key, response)
        try:
            generation = json.loads(response.body).get("generation")
        except (ValueError, AttributeError):
            generation = None
        return _version(generation, f"{what} {self._name(key)!r}")

    async def put(self, key: str, data: Buffer) -> str:
        response = await self._upload("PUT", key, data, None)
        return await self._uploaded_version("PUT", key, response)

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        response = await self._upload("PUT-if-absent", key, data, 0)
        if response.status == 412:
            raise AlreadyExistsError(key) from _native_error(response)
        return await self._uploaded_version("PUT-if-absent", key, response)

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        """Create the object from a stream, holding about one chunk in memory.

        A stream no longer than ``chunk_size`` is one media upload with
        ``ifGenerationMatch=0``. A longer one opens a resumable upload with the same
        precondition and sends ``chunk_size`` bytes per request; GCS checks the precondition
        when the last request completes the object, so a key created meanwhile raises
        :class:`AlreadyExistsError` there and replaces nothing. ``retry`` retries each request
        (a chunk whose response was lost is resumed from what GCS says it has); on failure the
        upload is cancelled.
        """
        policy = retry or RetryPolicy(max_attempts=1)
        return await upload_in_chunks(
            self,
            key,
            parts,
            size=self._chunk_size,
            retry=policy,
            open_upload=lambda: _ResumableUpload(self, key, policy),
        )

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        generation = _parse_generation(version)
        if generation is None:
            # Not a generation GCS could have issued: it cannot match whatever is stored.
            await self._raise_conflict(key, version, None)
        response = await self._upload("PUT-if-match", key, data, generation)
        if response.status == 412:
            await self._raise_conflict(key, version, _native_error(response))
        return await self._uploaded_version("PUT-if-match", key, response)

    async def _raise_conflict(
        self, key: str, version: str, cause: BaseException | None
    ) -> NoReturn:
        """Raise the error a 412 on ``key`` stands for: the object is gone, or it changed.

        GCS answers 412 both when the generation moved on and when the object does not exist;
        one metadata GET tells which.

        Raises:
            NotFoundError: if the object is gone.
            PreconditionFailedError: if the object exists (its generation moved on).
        """
        try:
            info = await self.head(key)
        except NotFoundError as exc:
            raise NotFoundError(
                key, f"object not found: {key!r} (conditional on version {version!r})"
            ) from (cause or exc)
        raise PreconditionFailedError(
            key, expected_version=version, actual_version=info.version
        ) from cause

    async def delete(self, key: str, version: str | None = None) -> None:
        params: dict[str, str] = {}
        if version is not None:
            generation = _parse_generation(version)
            if generation is None:
                try:
                    await self._raise_conflict(key, version, None)
                except NotFoundError:
                    return
            params["ifGenerationMatch"] = str(generation)
        response = await self._request("DELETE", "DELETE", self._object_path(key), params=params)
        if response.status in (200, 204, 404):
            return
        if response.status == 412 and version is not None:
            try:
                await self._raise_conflict(key, version, _native_error(response))
            except NotFoundError:
                return  # deleted by someone else meanwhile: deleting is idempotent
        await self._fail("DELETE", key, response)


class _ResumableUpload:
    """One resumable upload created with ``ifGenerationMatch=0``, sent chunk by chunk."""

    def __init__(self, transport: GCSTransport, key: str, retry: RetryPolicy) -> None:
        self._transport = transport
        self._key = key
        self._retry = retry
        self._session: str | None = None
        self._sent = 0
        """Bytes GCS has acknowledged."""

    async def start(self) -> None:
        """Open the upload session; ``AlreadyExistsError`` if the key exists already."""
        transport = self._transport

        async def attempt(_: int) -> str:
            response = await transport._request(
                "PUT-if-absent (resumable)",
                "POST",
                f"b/{_quote(transport._bucket)}/o",
                params={
                    "uploadType": "resumable",
                    "name": transport._name(self._key),
                    "ifGenerationMatch": "0",
                },
                headers={
                    "Content-Type": "application/json",
                    "X-Upload-Content-Type": "application/octet-stream",
                },
                data=aiohttp.payload.BytesPayload(b"{}", content_type="application/json"),
                upload=True,
            )
            if response.status == 412:
                raise AlreadyExistsError(self._key) from _native_error(response)
            location = response.headers.get("Location")
            if response.status != 200 or not location:
                await transport._fail("PUT-if-absent (resumable)", self._key, response)
            return location

        self._session = await self._retry.call(
            attempt, description=f"start resumable upload of {self._key}"
        )

    async def _persisted(self) -> int | _Response:
        """How many bytes GCS holds (a status query), or the final response if the upload
        has completed already (our last request landed but its response was lost)."""
        assert self._session is not None
        response = await self._transport._send(
            "upload status",
            "PUT",
            self._session,
            headers={"Content-Range": "bytes */*", "Content-Length": "0"},
        )
        if response.status in (200, 201):
            return response
        if response.status != 308:
            await self._transport._fail("upload status", self._key, response)
        received = response.headers.get("Range")  # "bytes=0-N"; absent when nothing arrived
        return int(received.rsplit("-", 1)[1]) + 1 if received else 0

    async def send(self, chunk: bytearray, *, final: bool) -> str | None:
        """Send the next chunk; with ``final``, complete the object and return its version."""
        transport = self._transport
        start = self._sent
        end = start + len(chunk)
        what = "PUT-if-absent (resumable)"

        async def attempt(number: int) -> str:
            offset = start
            if number > 1:
                persisted = await self._persisted()
                if isinstance(persisted, _Response):
                    if final:
                        return await transport._uploaded_version(what, self._key, persisted)
                    raise ObjstoreError(f"GCS upload of {self._key!r} completed early")
                if not start <= persisted <= end:
                    raise ObjstoreError(
                        f"GCS upload of {self._key!r} holds {persisted} bytes, expected "
                        f"{start}..{end}: cannot resume"
                    )
                offset = persisted
                if offset == end and not final:
                    return ""
            body = memoryview(chunk)[offset - start :]
            total = str(end) if final else "*"
            content_range = f"bytes {offset}-{end - 1}/{total}" if body else f"bytes */{total}"
            assert self._session is not None
            response = await transport._send(
                what,
                "PUT",
                self._session,
                headers={"Content-Range": content_range},
                data=_BufferPayload(body),
            )
            if response.status == 412:
                raise AlreadyExistsError(self._key) from _native_error(response)
            if final and response.status in (200, 201):
                return await transport._uploaded_version(what, self._key, response)
            if not final and response.status == 308:
                return ""
            if response.status == 308:  # GCS wants more than we sent: ask what it has
                raise TransientStorageError(f"GCS {what} {self._key!r}: upload incomplete")
            await transport._fail(what, self._key, response)

        version = await self._retry.call(
            attempt, description=f"upload bytes {start}-{end} of {self._key}"
        )
        self._sent = end
        if not final:
            return None
        self._session = None
        return version

    async def abort(self) -> None:
        """Cancel the upload session (best effort, never raises)."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await self._transport._send("cancel upload", "DELETE", session)
        except Exception:
            # Not fatal: GCS expires abandoned sessions after a week; nothing is created.
            logger.debug("could not cancel resumable upload of %s", self._key, exc_info=True)
