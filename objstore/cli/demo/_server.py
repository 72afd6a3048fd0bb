"""A moto S3 server for ``objstore demo --s3``, started on 127.0.0.1 for one run.

The endpoint and the throw-away credentials go to the demo as ``storage_options``; the
process environment is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

from objstore.cli.demo._steps import DemoError

__all__ = ["moto_s3"]

_KEY = _SECRET = "testing"  # moto accepts any credentials; these reach nothing else


@contextlib.contextmanager
def moto_s3(url: str) -> Iterator[dict[str, Any]]:
    """Start a moto S3 server on 127.0.0.1 and create the bucket of ``url`` in it; yield the
    ``storage_options`` that reach it (``endpoint_url``, throw-away ``key``/``secret``, a
    region); stop the server afterwards. The process environment is not touched.

    Raises:
        DemoError: when moto is not installed or ``url`` is not ``s3://bucket/...``.
    """
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise DemoError(
            "--s3 needs moto's server: pip install 'moto[server]' (or objstore[test])"
        ) from exc
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise DemoError(f"--s3 needs an s3://bucket/prefix URL, not {url!r}")
    werkzeug = logging.getLogger("werkzeug")
    werkzeug_level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one line per request otherwise, over the demo's story
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        region = "us-east-1"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=_KEY,
            aws_secret_access_key=_SECRET,
            region_name=region,
        )
        if parsed.netloc not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=parsed.netloc)
        yield {
            "endpoint_url": endpoint,
            "key": _KEY,
            "secret": _SECRET,
            "client_kwargs": {"region_name": region},
        }
    finally:
        server.stop()
        werkzeug.setLevel(werkzeug_level)
