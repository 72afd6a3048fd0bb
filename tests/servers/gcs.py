"""pytest plugin: in-process gcp-storage-emulator servers, one of them enforcing preconditions.

Fixtures:

* ``gcs_emulator`` (session): a :class:`GCSEmulator` on 127.0.0.1 (ephemeral port, in-memory)
  that behaves like GCS where objstore cares, and ``STORAGE_EMULATOR_HOST`` pointing at it.
  gcsfs reads that variable on every request and objstore's GCS transport then defaults to
  anonymous credentials, so ``open_backend("gs://bucket/x")`` needs no storage options, in this
  process and in child processes alike.
* ``gs_url`` (function): ``"gs://{bucket}/root"`` on a bucket created for this test alone.
* ``gcs_faults`` (function): a :class:`GCSFaults` that makes the emulator answer the next
  matching requests with an error (503, 429, 500, ...), before or after handling them.
* ``stock_gcs_emulator`` (session) / ``stock_gcs_endpoint`` / ``stock_gcs_url`` (function): a
  second, *unmodified* emulator on its own port — it ignores ``ifGenerationMatch`` like the
  stock emulator does. ``STORAGE_EMULATOR_HOST`` points elsewhere, so address it with
  ``open_backend(stock_gcs_url, endpoint_url=stock_gcs_endpoint)``.

What the fixture adds to the emulator (gcp-storage-emulator ignores all of it), only on the
``gcs_emulator`` server, by wrapping the handlers in the emulator's routing table and telling
servers apart by their ``Storage`` object:

* ``ifGenerationMatch`` on media/multipart uploads (``0``: the object must not exist; ``N``:
  its live generation must be ``N``, so a missing object fails too), on deletes, and on
  resumable uploads both when the session is opened and when its last request completes the
  object (a fresh generation is given then), answered with GCS's 412 ``conditionNotMet``;
  no ``Range`` header on a 308 while the upload holds nothing, and the object (200) in
  answer to a request on an upload that has completed, as on GCS.
  The server is ``http.server.HTTPServer``, which handles
  one request at a time on one thread (no ``ThreadingMixIn``), so check-then-write inside a
  handler is atomic without a lock.
* ``x-goog-generation`` on media downloads, as GCS sends it.
* ``maxResults`` / ``pageToken`` paging and inclusive ``startOffset`` of listings, as GCS
  does them.
* an empty media upload creates an empty object (the emulator crashes on ``len(None)``).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import socketserver
import threading
import time
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import pytest
from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.handlers import objects as emulator_objects
from gcp_storage_emulator.storage import Storage

from tests.servers._faults import ServerFaults

__all__ = [
    "GCSEmulator",
    "GCSFaults",
    "gcs_emulator",
    "gcs_faults",
    "gs_url",
    "stock_gcs_emulator",
    "stock_gcs_endpoint",
    "stock_gcs_url",
]

Handler = Callable[..., Any]

# Storages of the servers that behave like GCS (preconditions, headers, paging).
_faithful: weakref.WeakSet[Storage] = weakref.WeakSet()
# Fault injectors by server storage.
_faults: weakref.WeakKeyDictionary[Storage, GCSFaults] = weakref.WeakKeyDictionary()


class GCSFaults(ServerFaults):
    """Make the emulator fail chosen object requests, as GCS does under load or in outages.

    ``fail_next(2, status=503, methods={"POST"})`` makes the next two uploads fail before the
    emulator looks at them; the client sees a normal GCS JSON error. With ``after=True`` the
    request is handled first and only the response is replaced: a write that landed although
    its writer saw it fail. ``key_contains`` is matched against the unquoted request path and
    query (an object name appears in one of them). Object requests and listings are affected,
    bucket requests are not.
    """


# -- handler wrappers ----------------------------------------------------------------------------


def _json_error(response: Any, status: int, reason: str, message: str) -> None:
    response.status = HTTPStatus(status)
    response.json(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"domain": "global", "reason": reason, "message": message}],
            }
        }
    )


def _precondition_holds(storage: Storage, bucket: str, name: str, query: dict[str, Any]) -> bool:
    """GCS's ``ifGenerationMatch``: 0 = no live object; N = the live generation is N."""
    values = query.get("ifGenerationMatch")
    if not values:
        return True
    expected = int(values[0])
    current = storage.objects.get(bucket, {}).get(name)
    if expected == 0:
        return current is None
    return current is not None and int(current["generation"]) == expected


def _reject_precondition(response: Any) -> None:
    _json_error(
        response,
        412,
        "conditionNotMet",
        "At least one of the pre-conditions you specified did not hold.",
    )


def _upload_name(request: Any, upload_type: str) -> str | None:
    if "name" in request.query:
        return str(request.query["name"][0])
    if upload_type == "resumable" and isinstance(request.data, dict) and request.data.get("name"):
        return str(request.data["name"])
    if upload_type == "multipart" and isinstance(request.data, dict):
        name = request.data.get("meta", {}).get("name")
        return str(name) if name else None
    return None


def _insert(original: Handler, request: Any, response: Any, storage: Storage) -> Any:
    data = request.data  # read the body first: the client is still sending it
    upload_type = (request.query.get("uploadType") or [""])[0]
    if upload_type == "media" and data is None:
        request._data = b""  # the emulator takes len(None) of an empty body and crashes
    if upload_type in ("media", "multipart", "resumable"):
        name = _upload_name(request, upload_type)
        bucket = request.params["bucket_name"]
        if name is not None and not _precondition_holds(storage, bucket, name, request.query):
            return _reject_precondition(response)
    return original(request, response, storage)


def _completes(request: Any, storage: Storage, upload_id: str) -> bool:
    """Whether this request of a resumable upload completes the object: its Content-Range
    names the total size and, with its body, the server then holds all of it."""
    header = request.get_header("Content-Range", "") or ""
    total = header.rpartition("/")[2]
    if not total.isdigit():
        return False
    received = storage.get_resumable_byte_count(upload_id)
    return received + len(request.data or b"") >= int(total)


_completed_uploads: dict[tuple[int, str], tuple[str, str]] = {}
"""(server storage, upload id) -> (bucket, name) of every completed resumable upload."""


def _upload_partial(original: Handler, request: Any, response: Any, storage: Storage) -> Any:
    """A request of a resumable upload: the session URL repeats the creating request's query,
    so its ``ifGenerationMatch`` is checked again when the object is completed, as GCS does;
    the new object gets a fresh generation then (the emulator stamps the creation's time)."""
    upload_id = (request.query.get("upload_id") or [""])[0]
    _ = request.data  # read the body first: the client is still sending it
    try:
        obj = storage.get_resumable_file_obj(upload_id)
    except Exception:
        completed = _completed_uploads.get((id(storage), upload_id))
        current = storage.objects.get(completed[0], {}).get(completed[1]) if completed else None
        if current is None:
            return original(request, response, storage)
        return response.json(current)  # GCS answers a completed upload with its object
    if _completes(request, storage, upload_id):
        if not _precondition_holds(storage, obj["bucket"], obj["name"], request.query):
            return _reject_precondition(response)
        obj["generation"] = str(time.time_ns() // 1000)
        _completed_uploads[(id(storage), upload_id)] = (obj["bucket"], obj["name"])
    result = original(request, response, storage)
    if response.status == 308 and storage.get_resumable_byte_count(upload_id) == 0:
        # GCS sends no Range while it holds nothing; the emulator says "bytes=0-0" (1 byte).
        response._headers.pop("Range", None)
    return result


def _delete(original: Handler, request: Any, response: Any, storage: Storage) -> Any:
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    exists = name in storage.objects.get(bucket, {})
    if exists and not _precondition_holds(storage, bucket, name, request.query):
        return _reject_precondition(response)
    return original(request, response, storage)  # a missing object is a 404, as on GCS


def _download(original: Handler, request: Any, response: Any, storage: Storage) -> Any:
    result = original(request, response, storage)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        bucket, name = request.params["bucket_name"], request.params["object_id"]
        response["x-goog-generation"] = str(storage.objects[bucket][name]["generation"])
    return result


def _list(original: Handler, request: Any, response: Any, storage: Storage) -> Any:
    result = original(request, response, storage)
    if response.status != HTTPStatus.OK or "maxResults" not in request.query:
        return result
    page = json.loads(response._content)
    items = sorted(page.get("items") or [], key=lambda item: item["name"])
    offset = (request.query.get("startOffset") or [""])[0]
    if offset:
        items = [item for item in items if item["name"] >= offset]
    token = (request.query.get("pageToken") or [""])[0]
    if token:
        items = [item for item in items if item["name"] > token]
    size = max(1, int(request.query["maxResults"][0]))
    page["items"] = items[:size]
    page.pop("nextPageToken", None)
    if len(items) > size:
        page["nextPageToken"] = items[size - 1]["name"]
    response.json(page)
    return result


_ADDITIONS: dict[str, Callable[[Handler, Any, Any, Storage], Any]] = {
    "insert": _insert,
    "delete": _delete,
    "download": _download,
    "ls": _list,
    "upload_partial": _upload_partial,
}
_FAULTABLE = ("insert", "delete", "download", "ls", "get", "upload_partial")


def _wrap(name: str, original: Handler) -> Handler:
    """The emulator handler ``name``, plus faults and (on faithful servers) GCS behaviour."""
    addition = _ADDITIONS.get(name)

    @functools.wraps(original)
    def handler(request: Any, response: Any, storage: Storage, *args: Any, **kwargs: Any) -> Any:
        faults = _faults.get(storage)
        # objects.get delegates alt=media to objects.download: decide faults only once.
        if faults is not None and not getattr(request, "_objstore_fault_checked", False):
            request._objstore_fault_checked = True
            target = urllib.parse.unquote(request.full_url)
            fault = faults.take(request.method.upper(), target)
            if fault is not None:
                if fault.after:
                    handler(request, response, storage)
                else:
                    _ = request.data  # drain the body so the client gets the response
                _json_error(response, fault.status, "injected", "injected by the test")
                return None
        if addition is not None and storage in _faithful:
            return addition(original, request, response, storage)
        return original(request, response, storage, *args, **kwargs)

    return handler


@contextlib.contextmanager
def _patched_emulator() -> Iterator[None]:
    """Route the emulator's object handlers through :func:`_wrap` while the block runs."""
    originals = {name: getattr(emulator_objects, name) for name in _FAULTABLE}
    wrapped = {name: _wrap(name, fn) for name, fn in originals.items()}
    by_function = {id(fn): wrapped[name] for name, fn in originals.items()}
    with pytest.MonkeyPatch.context() as patch:
        for name, fn in wrapped.items():
            patch.setattr(emulator_objects, name, fn)  # objects.get calls download by name
        for _pattern, handlers in emulator_server.HANDLERS:
            for method, fn in list(handlers.items()):
                if id(fn) in by_function:
                    patch.setitem(handlers, method, by_function[id(fn)])
        yield


# -- servers ---------------------------------------------------------------------------------------


class _HTTPServer(http.server.HTTPServer):
    """The emulator's server class, one request at a time, with room for bursts of clients."""

    request_queue_size = 128


@dataclass(frozen=True)
class GCSEmulator:
    """One running emulator: where it listens and what it enforces."""

    endpoint_url: str
    """``http://127.0.0.1:PORT``: pass as ``endpoint_url=`` or ``STORAGE_EMULATOR_HOST``."""
    enforces_preconditions: bool
    faults: GCSFaults
    storage: Storage

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"objstore-test-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(
            f"{self.endpoint_url}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"creating bucket {name} failed: HTTP {response.status}")
        return name


@contextlib.contextmanager
def _running_emulator(*, faithful: bool) -> Iterator[GCSEmulator]:
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    logging.getLogger("gcp_storage_emulator.storage").setLevel(logging.CRITICAL)  # 404s
    logging.getLogger("api.object").setLevel(logging.ERROR)
    logging.getLogger("api.bucket").setLevel(logging.ERROR)
    storage = Storage(use_memory_fs=True)
    # In memory the emulator still re-serialises every bucket's metadata to JSON on each
    # write (its on-disk ``.meta``), so writes slow down as a session's tests add objects.
    # Nothing ever reads it back in memory mode.
    storage._write_config_to_file = lambda: None
    faults = GCSFaults()
    _faults[storage] = faults
    if faithful:
        _faithful.add(storage)
    httpd = _HTTPServer(
        ("127.0.0.1", 0), functools.partial(emulator_server.RequestHandler, storage)
    )
    # Handlers check a precondition and then write: atomic only while requests are serial.
    assert not isinstance(httpd, socketserver.ThreadingMixIn)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield GCSEmulator(f"http://{host!s}:{port}", faithful, faults, storage)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def _emulator_environment(endpoint: str) -> Iterator[None]:
    names = ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# A test module may import these fixtures while conftest also registers this plugin; pytest
# then holds two definitions of each session fixture. Both must share one server (and one
# STORAGE_EMULATOR_HOST), so servers are reference-counted per kind, process-wide.
_shared_lock = threading.Lock()
_shared: dict[bool, tuple[GCSEmulator, contextlib.ExitStack, int]] = {}
_patches = contextlib.ExitStack()


@contextlib.contextmanager
def _shared_emulator(*, faithful: bool) -> Iterator[GCSEmulator]:
    with _shared_lock:
        if not _shared:
            _patches.enter_context(_patched_emulator())  # once, for every server
        if faithful in _shared:
            emulator, stack, users = _shared[faithful]
        else:
            stack = contextlib.ExitStack()
            emulator = stack.enter_context(_running_emulator(faithful=faithful))
            if faithful:
                stack.enter_context(_emulator_environment(emulator.endpoint_url))
            users = 0
        _shared[faithful] = (emulator, stack, users + 1)
    try:
        yield emulator
    finally:
        with _shared_lock:
            emulator, stack, users = _shared[faithful]
            if users > 1:
                _shared[faithful] = (emulator, stack, users - 1)
            else:
                del _shared[faithful]
                stack.close()
                if not _shared:
                    _patches.close()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GCSEmulator]:
    """An in-process emulator that enforces preconditions; the environment points at it."""
    with _shared_emulator(faithful=True) as emulator:
        yield emulator


@pytest.fixture
def gs_url(gcs_emulator: GCSEmulator) -> str:
    """``gs://{bucket}/root`` on a bucket created for this test alone."""
    return f"gs://{gcs_emulator.create_bucket()}/root"


@pytest.fixture
def gcs_faults(gcs_emulator: GCSEmulator) -> Iterator[GCSFaults]:
    """The fault injector of ``gcs_emulator``, empty and with a zero count for this test."""
    gcs_emulator.faults.clear()
    gcs_emulator.faults.injected = 0
    yield gcs_emulator.faults
    gcs_emulator.faults.clear()


@pytest.fixture(scope="session")
def stock_gcs_emulator() -> Iterator[GCSEmulator]:
    """A second emulator, as shipped: it ignores ``ifGenerationMatch``."""
    with _shared_emulator(faithful=False) as emulator:
        yield emulator


@pytest.fixture
def stock_gcs_endpoint(stock_gcs_emulator: GCSEmulator) -> str:
    """The ``endpoint_url`` storage option that addresses ``stock_gcs_emulator``."""
    return stock_gcs_emulator.endpoint_url


@pytest.fixture
def stock_gcs_url(stock_gcs_emulator: GCSEmulator) -> str:
    """``gs://{bucket}/root`` on the stock emulator (open it with ``endpoint_url=``)."""
    return f"gs://{stock_gcs_emulator.create_bucket()}/root"
