"""Every backend, sync and async, passes the one shipped contract suite."""

from pathlib import Path

import pytest

from objstore.testing.contract import BackendContract
from tests.conftest import ALL_BACKENDS, make_store_url

CONTRACT_BACKENDS = [*ALL_BACKENDS, "seaweedfs"]
"""Every backend, plus SeaweedFS as a second real S3 server next to moto."""


class TestBackendContract(BackendContract):
    """memory, file, s3 (moto server), seaweedfs and gs (emulator), through both faces; the
    process races run on every shared backend (``shared_store_url``, seaweedfs included)."""

    @pytest.fixture(params=CONTRACT_BACKENDS)
    def store_url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        """A fresh store on each backend in turn."""
        return make_store_url(request.param, request, tmp_path)
