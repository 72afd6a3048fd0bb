"""The package version (one home: ``objstore.__version__`` and the OpenTelemetry meter read it)."""

__version__ = "0.1.0"
