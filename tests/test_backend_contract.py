"""Every backend, sync and async, passes the one shipped contract suite."""

from objstore.testing.contract import BackendContract


class TestBackendContract(BackendContract):
    """memory, file, s3 (moto server) and gs (emulator), through both faces."""
