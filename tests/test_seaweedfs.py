"""SeaweedFS, a second real S3 server: its differences from AWS are absorbed by the transport.

The backend contract suite and the multi-process races run on SeaweedFS through
``tests/conftest.py`` (kind ``seaweedfs``); this file pins down, at the transport level and on
moto and SeaweedFS alike, each place where SeaweedFS answers differently from AWS, plus the
parts of the S3 transport the contract suite does not reach (multipart creates, the probe,
one client per endpoint).

Not tested here because it does not hold: SeaweedFS 4.48 checks ``If-None-Match: *`` on
CompleteMultipartUpload and then writes, in separate steps. Three uploads of one key completed
at once had two or three "winners" in 7 of 15 runs (single PutObject creates, CAS and
conditional deletes had exactly one in 60 of 60). No client can make that atomic; see the
S3 transport's module docstring. Racing streamed creates are tested on moto
(``tests/test_s3_transport.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import botocore.exceptions
import pytest

from objstore.backends import open_async_backend, open_backend
from objstore.backends._s3 import MIN_PART_SIZE, _MultipartUpload, multipart_etag
from objstore.checkpoint import LATEST, checkpoint_dir
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError
from tests.conftest import make_store_url
from tests.servers import seaweedfs as seaweedfs_plugin
from tests.servers.s3 import _aws_environment
from tests.servers.seaweedfs import ACCESS_KEY, STARTUP_TIMEOUT, SeaweedFS
from tests.test_s3_transport import chunks, run, transport_for

S3_SERVERS = ["s3", "seaweedfs"]
"""moto (which answers like AWS) and SeaweedFS."""


@pytest.fixture(params=S3_SERVERS)
def s3_server_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ``s3://`` store on moto, then on SeaweedFS."""
    return make_store_url(request.param, request, tmp_path)


def test_seaweedfs_server_listens_on_loopback_and_checks_signatures(
    seaweedfs_server: SeaweedFS,
) -> None:
    assert seaweedfs_server.endpoint_url.startswith("http://127.0.0.1:")
    assert seaweedfs_server.process.poll() is None
    assert 0 < seaweedfs_server.startup_seconds < STARTUP_TIMEOUT
    intruder = boto3.client(
        "s3",
        endpoint_url=seaweedfs_server.endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="wrong",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        intruder.put_object(Bucket=seaweedfs_server.bucket, Key="intruder", Body=b"x")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_storage_options_reach_seaweedfs_without_the_environment(
    seaweedfs_server: SeaweedFS,
) -> None:
    backend = open_backend(seaweedfs_server.fresh_url(), **seaweedfs_server.storage_options)
    version = backend.put_if_absent("k", b"explicit")
    assert backend.get("k") == (b"explicit", version)
    backend.close()


def test_a_server_that_cannot_start_fails_loudly_with_its_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seaweedfs_plugin, "weed_binary", lambda: Path("/bin/false"))
    with (
        pytest.raises(RuntimeError, match=r"did not start(.|\n)*exited with status 1"),
        seaweedfs_plugin.running_seaweedfs(tmp_path),
    ):
        pass


# -- differences from AWS, absorbed by the transport ---------------------------------------------


def test_put_if_match_on_missing_key_is_not_found(s3_server_url: str) -> None:
    """AWS (and moto) answer 404; SeaweedFS answers 412 PreconditionFailed."""
    transport = transport_for(s3_server_url)

    async def scenario() -> None:
        version = await transport.put_if_absent("k", b"1")
        with pytest.raises(NotFoundError):
            await transport.put_if_match("never-written", b"2", version)
        await transport.delete("k")
        with pytest.raises(NotFoundError):
            await transport.put_if_match("k", b"2", version)
        with pytest.raises(NotFoundError):
            await transport.get("k")
        await transport.close()

    run(scenario)


def test_put_if_match_with_stale_version_is_still_a_precondition_failure(
    s3_server_url: str,
) -> None:
    transport = transport_for(s3_server_url)

    async def scenario() -> None:
        stale = await transport.put_if_absent("k", b"1")
        current = await transport.put_if_match("k", b"2", stale)
        with pytest.raises(PreconditionFailedError):
            await transport.put_if_match("k", b"3", stale)
        assert await transport.get("k") == (b"2", current)
        await transport.close()

    run(scenario)


def test_conditional_delete_of_missing_key_is_a_no_op(s3_server_url: str) -> None:
    """AWS (and moto) answer 404, which the transport treats as "already gone"; SeaweedFS
    answers 412, which must not become a precondition failure."""
    transport = transport_for(s3_server_url)

    async def scenario() -> None:
        version = await transport.put_if_absent("k", b"1")
        await transport.delete("k", version)
        await transport.delete("k", version)
        await transport.delete("never-written", version)
        other = await transport.put_if_absent("other", b"1")
        newer = await transport.put_if_match("other", b"2", other)
        with pytest.raises(PreconditionFailedError):
            await transport.delete("other", other)
        assert await transport.get("other") == (b"2", newer)
        await transport.close()

    run(scenario)


def test_probe_accepts_both_servers(s3_server_url: str) -> None:
    backend = open_async_backend(s3_server_url)

    async def scenario() -> tuple[bool, bool, bool]:
        result = await backend.probe()
        await backend.close()
        return result.create_if_absent, result.compare_and_swap, result.conditional_delete

    assert run(scenario) == (True, True, True)


@pytest.mark.parametrize("page_size", [1000, 2])
def test_list_after_a_checkpoint_directory_marker_is_exact(
    s3_server_url: str, page_size: int
) -> None:
    """SeaweedFS lists in tree order and skips keys under a ``StartAfter`` that names a
    directory; the checkpoint store's markers (``checkpoints/checkpoint_<id>/~``) are exact
    on it anyway (see the S3 transport's module docstring)."""
    transport = transport_for(s3_server_url)
    transport.list_page_size = page_size
    keys = sorted(
        [f"{checkpoint_dir(cid)}/{name}" for cid in (1, 2, 3, 5) for name in ("a", "b")] + [LATEST]
    )

    async def scenario() -> None:
        for key in keys:
            await transport.put(key, b"x")
        for low in (0, 1, 2, 4, 5):
            marker = checkpoint_dir(low) + "/~"
            for limit in (1, 3, 100):
                got = [i.key for i in await transport.list_after("checkpoints", marker, limit)]
                assert got == [k for k in keys if k > marker][:limit], (marker, limit)
        await transport.close()

    run(scenario)


# -- multipart create-if-absent -----------------------------------------------------------------


def test_stream_multipart_creates_if_absent_once(s3_server_url: str) -> None:
    transport = transport_for(s3_server_url, part_size=MIN_PART_SIZE, parts_in_flight=2)
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    etags: dict[int, str] = {}
    original = _MultipartUpload._upload

    async def recording(self: _MultipartUpload, number: int, part: bytes) -> None:
        await original(self, number, part)
        etags[number] = self._etags[number]

    async def scenario() -> str:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_MultipartUpload, "_upload", recording)
            version = await transport.put_if_absent_stream("big", chunks(data, 1_000_003))
        assert await transport.get("big") == (data, version)
        with pytest.raises(AlreadyExistsError):
            await transport.put_if_absent_stream("big", chunks(data[::-1], 3_000_000))
        assert (await transport.get("big"))[0] == data
        await transport.close()
        return version

    version = run(scenario)
    # A lost completion is recognised by this ETag (see _MultipartUpload.complete).
    assert multipart_etag([etags[number] for number in sorted(etags)]) == version


# -- clients --------------------------------------------------------------------------------------


def test_transports_opened_under_different_endpoints_do_not_share_a_client(
    s3_url: str, seaweedfs_server: SeaweedFS
) -> None:
    """The pool shares one client per loop and options; the endpoint the environment names
    (``AWS_ENDPOINT_URL``) is part of that identity, so a second server is really reached."""
    on_moto = transport_for(s3_url)
    with _aws_environment(seaweedfs_server.endpoint_url):
        on_seaweedfs = transport_for(seaweedfs_server.fresh_url())

    async def scenario() -> None:
        await on_moto.put("k", b"moto")
        with _aws_environment(seaweedfs_server.endpoint_url):
            await on_seaweedfs.put("k", b"seaweedfs")
        assert (await on_moto.get("k"))[0] == b"moto"
        assert (await on_seaweedfs.get("k"))[0] == b"seaweedfs"
        await on_moto.close()
        await on_seaweedfs.close()

    run(scenario)
