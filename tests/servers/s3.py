"""pytest plugin: an in-process moto S3 server that behaves like S3 where objstore cares.

Fixtures:

* ``moto_server`` (session): starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1, an
  ephemeral port, and points the AWS environment at it (``AWS_ENDPOINT_URL`` and dummy
  credentials). botocore reads ``AWS_ENDPOINT_URL`` itself, so ``open_backend("s3://b/x")``
  needs no storage options, in this process and in child processes alike. Returns the
  endpoint URL.
* ``s3_url`` (function): a fresh, empty bucket per test; returns ``"s3://{bucket}/root"``.
* ``s3_faults`` (function): an :class:`S3Faults` that makes the server answer the next
  matching requests with an error (503 SlowDown, 500, 409 ConditionalRequestConflict...).

moto 5.2.1 enforces ``If-None-Match: *`` and ``If-Match`` on PutObject, ``If-None-Match: *``
on CompleteMultipartUpload and ``If-Match`` on DeleteObject (checked by
``tests/test_s3_transport.py``), but it checks the condition and then writes, in separate
steps, while the server handles requests on concurrent threads: 8 threads racing creates of
one key under a short thread switch interval saw two winners, and some of the racing requests
got 500s ("I/O operation on closed file"). S3 answers every request atomically, so
the fixture runs moto's request handlers one at a time for the session; requests from many
clients still interleave freely, just never inside one another.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from tests.servers._faults import ServerFaults

__all__ = ["S3Faults", "atomic_requests", "moto_server", "s3_faults", "s3_url"]

_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_UNSET = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)

# The entry points of every S3 request moto serves: object requests (GET, HEAD, PUT, POST for
# multipart, DELETE), bucket requests (listings, bucket creation) and path-style requests that
# could be either.
_HANDLERS = ("key_response", "bucket_response", "ambiguous_response")

_request_lock = threading.RLock()


@contextlib.contextmanager
def atomic_requests() -> Iterator[None]:
    """Run moto's S3 request handlers one at a time, so each request is atomic as on S3.

    Conditional writes then check and write in one step, and a read never sees an object
    half replaced.
    """
    originals = {name: getattr(S3Response, name) for name in _HANDLERS}

    def serialised(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def handler(self: S3Response, *args: Any, **kwargs: Any) -> Any:
            with _request_lock:
                return method(self, *args, **kwargs)

        return handler

    for name, method in originals.items():
        setattr(S3Response, name, serialised(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(S3Response, name, method)


class S3Faults(ServerFaults):
    """Make the moto server fail chosen requests, as S3 does under load or during outages.

    ``fail_next(2, status=503, code="SlowDown", methods={"PUT"})`` makes the next two PUTs of
    an object fail before moto looks at them; the client sees a normal S3 error response.
    With ``after=True`` moto handles the request first and only the response is replaced by
    the error: a write that landed although its writer saw it fail. Faults apply to object
    requests only (not bucket requests such as listings).
    """

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route moto's object requests through this injector while the block runs."""
        original = S3Response.key_response
        faults = self

        @functools.wraps(original)
        def key_response(self: S3Response, request: Any, full_url: str, headers: Any) -> Any:
            fault = faults.take(str(request.method).upper(), full_url)
            if fault is None:
                return original(self, request, full_url, headers)
            if fault.after:
                original(self, request, full_url, headers)
            elif hasattr(request, "get_data"):
                request.get_data()  # drain the body so the connection stays usable
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>injected by the test</Message>"
                f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
            )
            return fault.status, {"Content-Type": "application/xml"}, body

        S3Response.key_response = key_response  # type: ignore[method-assign]
        try:
            yield
        finally:
            S3Response.key_response = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _aws_environment(endpoint: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (*_ENVIRONMENT, *_UNSET, "AWS_ENDPOINT_URL")}
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(_ENVIRONMENT, AWS_ENDPOINT_URL=endpoint)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of an in-process moto server; the AWS environment points at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with _aws_environment(endpoint), atomic_requests():
            yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_url(moto_server: str) -> str:
    """``s3://{bucket}/root`` on a bucket created for this test alone."""
    bucket = f"objstore-test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture
def s3_faults(moto_server: str) -> Iterator[S3Faults]:
    """An :class:`S3Faults` installed on the moto server for this test."""
    faults = S3Faults()
    with faults.installed():
        yield faults
