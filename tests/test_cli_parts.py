"""``objstore ls``, ``show`` and ``verify`` on a parallel checkpoint (manifest format 2):
parts counted and sized, each part checked, damage to one part reported by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from objstore import CheckpointStore, key_group_parts, write_part
from objstore.backends import open_backend
from objstore.checkpoint import part_key
from tests.test_cli import invoke, invoke_json, save


@pytest.fixture(params=["file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store holding checkpoint 1 (one writer) and parallel checkpoint 2 (four parts)."""
    url = str(tmp_path / "store") if request.param == "file" else request.getfixturevalue("s3_url")
    save(url, 1)
    store = CheckpointStore(url)
    job = store.begin_parallel(2, 1, key_group_parts(4, 64))
    job.commit([write_part(t, {"op": t.part.encode() * 200}) for t in job.tickets])
    store.close()
    return str(url)


def _part_sizes(url: str) -> dict[str, int]:
    backend = open_backend(url)
    sizes = {info.key: info.size for info in backend.list("checkpoints") if "/parts/" in info.key}
    backend.close()
    return sizes


def test_ls_counts_and_sizes_the_parts(url: str) -> None:
    code, doc = invoke_json("ls", url)
    assert code == 0
    rows = {row["id"]: row for row in doc["checkpoints"]}
    assert (rows[1]["parts"], rows[2]["parts"]) == (0, 4)
    assert rows[2]["state_size"] == sum(_part_sizes(url).values())
    assert rows[2]["status"] == "valid"
    human = invoke("ls", url)
    assert "in 4 parts" in human.stdout
    backend = open_backend(url)
    backend.put(part_key(2, "kg-0016-0031"), b"short")
    backend.delete(part_key(2, "kg-0048-0063"))
    backend.close()
    for quick in ((), ("--quick",)):
        code, doc = invoke_json("ls", url, *quick)
        rows = {row["id"]: row for row in doc["checkpoints"]}
        assert code != 0
        assert rows[2]["status"] == "corrupt"
        assert "part 'kg-0016-0031'" in rows[2]["reason"]
        assert "truncated" in rows[2]["reason"]
        assert "part 'kg-0048-0063'" in rows[2]["reason"]
        assert rows[2]["parts"] == 3
    assert "object truncated" in rows[2]["reason"]  # --quick: judged by the listing alone


def test_show_lists_the_parts(url: str) -> None:
    code, doc = invoke_json("show", url, "2")
    assert code == 0
    assert doc["manifest"]["format_version"] == 2
    assert [part["name"] for part in doc["manifest"]["parts"]] == list(key_group_parts(4, 64))
    human = invoke("show", url, "2")
    assert "4 parts" in human.stdout
    assert "kg-0032-0047" in human.stdout
    assert "32-47" in human.stdout
    single = invoke("show", url, "1")
    assert "parts" not in single.stdout.split("manifest.json")[0]


def test_verify_checks_every_part(url: str) -> None:
    code, doc = invoke_json("verify", url, "--all")
    assert code == 0
    assert [(row["id"], row["valid"], row["parts"]) for row in doc["checkpoints"]] == [
        (1, True, 0),
        (2, True, 4),
    ]
    key = part_key(2, "kg-0032-0047")
    backend = open_backend(url)
    data = backend.get(key)[0]
    backend.put(key, data[:-4] + bytes(4))  # same size: only the hash can tell
    backend.close()
    code, doc = invoke_json("verify", url, "2")
    assert code != 0
    assert "kg-0032-0047" in doc["checkpoints"][0]["issues"][0]
    human = invoke("verify", url, "2")
    assert "in 4 parts" in human.stdout
    assert "INVALID" in human.stdout
