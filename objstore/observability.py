"""Per-request metrics: a plain Python hook, and OpenTelemetry metrics built on it.

Every attempt of every request a store sends (GET, PUT, LIST, ..., retries and the
capability probe included) ends as one frozen :class:`RequestEvent`. Three ways to see them:

- **Logging**: each event is logged at DEBUG on ``objstore.backends._observe`` (the
  ``objstore`` command's ``-v`` shows them). objstore never configures logging handlers.
- **A hook**: pass ``request_hook=callback`` to any store (or to ``open_backend``); the
  callback gets every :class:`RequestEvent`, synchronously, on the thread of the event loop
  that sent the request. Keep it quick; an exception it raises is logged, never raised.
- **OpenTelemetry** (``pip install 'objstore[otel]'``, the API only): pass
  ``request_hook=OpenTelemetryMetrics()``. It records through
  ``opentelemetry.metrics.get_meter("objstore")``, so whatever meter provider the
  application installs (an SDK with an exporter) receives them; with none installed the API's
  no-op meter makes it free. ``opentelemetry`` is imported only when
  :class:`OpenTelemetryMetrics` is created.

Instruments recorded by :class:`OpenTelemetryMetrics`, each with the attributes
``objstore.operation`` (:data:`Operation`), ``objstore.outcome`` (:data:`Outcome`) and
``objstore.scheme`` (``memory``, ``file``, ``s3``, ``gs``):

==============================  =========  ====================================================
``objstore.requests``           counter    attempts sent (``{request}``)
``objstore.retries``            counter    attempts that retried a transient failure
``objstore.request.duration``   histogram  seconds per attempt (``s``)
``objstore.bytes.sent``         counter    payload bytes written (``By``)
``objstore.bytes.received``     counter    payload bytes read (``By``)
==============================  =========  ====================================================

Example::

    from objstore import CheckpointStore, RequestEvent

    def log_slow(event: RequestEvent) -> None:
        if event.duration > 0.5:
            print(f"slow {event.operation} {event.key}: {event.duration:.2f}s {event.outcome}")

    with CheckpointStore("s3://bucket/app", request_hook=log_slow) as store:
        store.load_latest()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from objstore._version import __version__
from objstore.backends import Operation, Outcome, RequestEvent, RequestHook

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = [
    "OpenTelemetryMetrics",
    "Operation",
    "Outcome",
    "RequestEvent",
    "RequestHook",
    "request_hooks",
]


def request_hooks(*hooks: RequestHook) -> RequestHook:
    """One hook that calls each of ``hooks`` in turn (e.g. OpenTelemetry and your own).

    A hook that raises does not keep the later ones from seeing the event; the first
    error is raised after all ran (and logged by the store, never failing the request).

    Raises:
        TypeError: if one of ``hooks`` is not callable.
    """
    chosen = tuple(hooks)
    for hook in chosen:
        if not callable(hook):
            raise TypeError(f"request hooks must be callable, not {type(hook).__name__}")

    def call_all(event: RequestEvent) -> None:
        first: Exception | None = None
        for hook in chosen:
            try:
                hook(event)
            except Exception as error:
                first = first or error
        if first is not None:
            raise first

    return call_all


class OpenTelemetryMetrics:
    """A request hook recording objstore's instruments through the OpenTelemetry API.

    Args:
        meter_provider: where to create the meter; default the global one
            (``opentelemetry.metrics.set_meter_provider``), looked up now.

    Raises ``ImportError`` (naming the ``objstore[otel]`` extra) when ``opentelemetry-api``
    is not installed.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as exc:  # pragma: no cover - the test extra installs it
            raise ImportError(
                "OpenTelemetryMetrics needs opentelemetry-api: pip install 'objstore[otel]'"
            ) from exc

        meter = metrics.get_meter("objstore", __version__, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "objstore.requests", unit="{request}", description="Requests sent to object storage"
        )
        self._retries = meter.create_counter(
            "objstore.retries",
            unit="{request}",
            description="Requests that retried a transient failure",
        )
        self._duration = meter.create_histogram(
            "objstore.request.duration", unit="s", description="Duration of each request"
        )
        self._sent = meter.create_counter(
            "objstore.bytes.sent", unit="By", description="Payload bytes written"
        )
        self._received = meter.create_counter(
            "objstore.bytes.received", unit="By", description="Payload bytes read"
        )

    def __call__(self, event: RequestEvent) -> None:
        """Record one request."""
        attributes = {
            "objstore.operation": event.operation,
            "objstore.outcome": event.outcome,
            "objstore.scheme": event.scheme,
        }
        self._requests.add(1, attributes)
        if event.is_retry:
            self._retries.add(1, attributes)
        self._duration.record(event.duration, attributes)
        if event.bytes_sent:
            self._sent.add(event.bytes_sent, attributes)
        if event.bytes_received:
            self._received.add(event.bytes_received, attributes)
