"""The infrastructure factory ``PERSISTENCE_MODULE=objstore.eventsourcing`` resolves to.

Configured from the environment the framework hands it (each variable may be prefixed with
the application's or projection's upper-cased name, e.g. ``COUNTERS_OBJSTORE_URL``, which
wins over the plain one). Every variable is documented in the README's "eventsourcing"
section; :data:`ENVIRONMENT` lists them.

What lives where:
- snapshots (``aggregate_recorder("snapshots")``) and any other aggregate recorder: objstore,
  one object per version (:class:`ObjstoreAggregateRecorder`);
- tracking recorders and views (``tracking_recorder``): objstore checkpoints, one store per
  view (:class:`ObjstoreTrackingRecorder`);
- the application's events and notification log (``application_recorder``) and process
  recorders: the persistence module named by ``OBJSTORE_EVENTS_MODULE`` (SQLite, Postgres,
  ...), because objstore offers no application recorder (see the README for why).
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    InfrastructureFactoryError,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from objstore.backends import Backend, open_backend
from objstore.checkpoint import CheckpointStore
from objstore.eventsourcing._layout import view_root
from objstore.eventsourcing._recorder import ObjstoreAggregateRecorder
from objstore.eventsourcing._view import ObjstoreTrackingRecorder

__all__ = ["ENVIRONMENT", "ObjstoreFactory"]

ENVIRONMENT = {
    "OBJSTORE_URL": "root URL or path of the store (s3://bucket/prefix, gs://..., a directory)",
    "OBJSTORE_STORAGE_OPTIONS": "JSON object of transport storage options",
    "OBJSTORE_ENDPOINT_URL": "S3/GCS endpoint (storage option endpoint_url)",
    "OBJSTORE_REGION": "S3 region (client_kwargs.region_name)",
    "OBJSTORE_ACCESS_KEY_ID": "S3 access key (storage option key)",
    "OBJSTORE_SECRET_ACCESS_KEY": "S3 secret key (storage option secret)",
    "OBJSTORE_SESSION_TOKEN": "S3 session token (storage option token)",
    "OBJSTORE_VERIFY_FENCING": "probe that the store enforces preconditions (default yes)",
    "OBJSTORE_EVENTS_MODULE": "persistence module for events/notifications and process recorders",
    "OBJSTORE_VIEW_NAME": "name of the view's store (default: the environment's name)",
    "OBJSTORE_EPOCH": "epoch a view claims on its first write (default: the next free one)",
    "OBJSTORE_COMMIT_EVERY": "commit a view after this many events (default 100)",
    "OBJSTORE_COMMIT_INTERVAL": "or this many seconds after its first uncommitted event "
    "(default 1.0; 0 disables)",
    "OBJSTORE_KEEP_CHECKPOINTS": "committed checkpoints a view keeps (default 3)",
}
"""Every environment variable the factory reads, with what it means."""


class _EventsEnvironment(Environment):
    """The factory's environment as seen by the events module: the same variables (read
    live, so later changes count), with ``PERSISTENCE_MODULE`` naming the events module."""

    def __init__(self, base: Environment, module: str) -> None:
        super().__init__(base.name, dict(base))
        self._base = base
        self._module = module

    def get(self, key: str, /, default: Any = None) -> Any:
        if key == InfrastructureFactory.PERSISTENCE_MODULE:
            return self._module
        return self._base.get(key, default)


class ObjstoreFactory(InfrastructureFactory[ObjstoreTrackingRecorder]):
    """Snapshots and views on objstore; events in the module ``OBJSTORE_EVENTS_MODULE`` names.

    Raises ``OSError`` (``EnvironmentError``, as the framework's own factories do) when
    ``OBJSTORE_URL`` is missing or a variable cannot be parsed; the store is opened lazily,
    so a bad URL surfaces as ``ValueError`` at the first recorder.
    """

    OBJSTORE_URL = "OBJSTORE_URL"
    OBJSTORE_STORAGE_OPTIONS = "OBJSTORE_STORAGE_OPTIONS"
    OBJSTORE_ENDPOINT_URL = "OBJSTORE_ENDPOINT_URL"
    OBJSTORE_REGION = "OBJSTORE_REGION"
    OBJSTORE_ACCESS_KEY_ID = "OBJSTORE_ACCESS_KEY_ID"
    OBJSTORE_SECRET_ACCESS_KEY = "OBJSTORE_SECRET_ACCESS_KEY"
    OBJSTORE_SESSION_TOKEN = "OBJSTORE_SESSION_TOKEN"
    OBJSTORE_VERIFY_FENCING = "OBJSTORE_VERIFY_FENCING"
    OBJSTORE_EVENTS_MODULE = "OBJSTORE_EVENTS_MODULE"
    OBJSTORE_VIEW_NAME = "OBJSTORE_VIEW_NAME"
    OBJSTORE_EPOCH = "OBJSTORE_EPOCH"
    OBJSTORE_COMMIT_EVERY = "OBJSTORE_COMMIT_EVERY"
    OBJSTORE_COMMIT_INTERVAL = "OBJSTORE_COMMIT_INTERVAL"
    OBJSTORE_KEEP_CHECKPOINTS = "OBJSTORE_KEEP_CHECKPOINTS"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        url = (self.env.get(self.OBJSTORE_URL) or "").strip()
        if not url:
            raise OSError(
                "objstore URL not found in environment with keys: "
                + ", ".join(self.env.create_keys(self.OBJSTORE_URL))
            )
        self.url = url
        self.storage_options = self._storage_options()
        self.verify_fencing = strtobool(self.env.get(self.OBJSTORE_VERIFY_FENCING, "yes"))
        self._backend: Backend | None = None
        self._events: InfrastructureFactory[Any] | None = None

    # -- configuration -------------------------------------------------------------------------

    def _storage_options(self) -> dict[str, Any]:
        text = self.env.get(self.OBJSTORE_STORAGE_OPTIONS) or ""
        try:
            options = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise OSError(f"{self.OBJSTORE_STORAGE_OPTIONS} is not JSON: {exc}") from None
        if not isinstance(options, dict):
            raise OSError(f"{self.OBJSTORE_STORAGE_OPTIONS} must be a JSON object")
        for variable, option in (
            (self.OBJSTORE_ENDPOINT_URL, "endpoint_url"),
            (self.OBJSTORE_ACCESS_KEY_ID, "key"),
            (self.OBJSTORE_SECRET_ACCESS_KEY, "secret"),
            (self.OBJSTORE_SESSION_TOKEN, "token"),
        ):
            value = self.env.get(variable)
            if value:
                options[option] = value
        region = self.env.get(self.OBJSTORE_REGION)
        if region:
            options.setdefault("client_kwargs", {})["region_name"] = region
        return options

    def _number(self, variable: str, default: str, kind: type[int] | type[float]) -> Any:
        text = (self.env.get(variable) or default).strip()
        try:
            return kind(text)
        except ValueError:
            raise OSError(f"{variable} must be a number, got {text!r}") from None

    @property
    def backend(self) -> Backend:
        """The store the aggregate recorders share (opened on first use)."""
        if self._backend is None:
            self._backend = open_backend(
                self.url, verify_fencing=self.verify_fencing, **self.storage_options
            )
        return self._backend

    # -- recorders -----------------------------------------------------------------------------

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """An :class:`ObjstoreAggregateRecorder` for ``purpose`` (``"snapshots"`` for an
        application's snapshots)."""
        return ObjstoreAggregateRecorder(self.backend, purpose)

    def _events_factory(self) -> InfrastructureFactory[Any]:
        if self._events is None:
            module = self.env.get(self.OBJSTORE_EVENTS_MODULE)
            if not module:
                raise InfrastructureFactoryError(
                    "objstore keeps snapshots and views, not an application's events: name "
                    "the persistence module for events in "
                    + " or ".join(self.env.create_keys(self.OBJSTORE_EVENTS_MODULE))
                    + " (e.g. eventsourcing.sqlite or eventsourcing.postgres)"
                )
            if module.split(":")[0] == __name__.rsplit(".", 1)[0]:
                raise InfrastructureFactoryError(
                    f"{self.OBJSTORE_EVENTS_MODULE} cannot be objstore.eventsourcing itself"
                )
            self._events = InfrastructureFactory.construct(_EventsEnvironment(self.env, module))
        return self._events

    def application_recorder(self) -> ApplicationRecorder:
        """The events module's application recorder (see the module docstring);
        ``InfrastructureFactoryError`` when ``OBJSTORE_EVENTS_MODULE`` is not set."""
        return self._events_factory().application_recorder()

    def process_recorder(self) -> ProcessRecorder:
        """The events module's process recorder: a process application's new events and its
        tracking must commit in one transaction of one database, the events' own.
        ``InfrastructureFactoryError`` when ``OBJSTORE_EVENTS_MODULE`` is not set."""
        return self._events_factory().process_recorder()

    def tracking_recorder(
        self, tracking_recorder_class: type[ObjstoreTrackingRecorder] | None = None
    ) -> ObjstoreTrackingRecorder:
        """A view (or plain tracking recorder) of ``tracking_recorder_class`` (else the
        class ``TRACKING_RECORDER_TOPIC`` names, else :class:`ObjstoreTrackingRecorder`),
        kept under ``{OBJSTORE_URL}/views/{name}``.

        Raises:
            TypeError: the class is not an :class:`ObjstoreTrackingRecorder`.
        """
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else ObjstoreTrackingRecorder
        if not (
            isinstance(tracking_recorder_class, type)
            and issubclass(tracking_recorder_class, ObjstoreTrackingRecorder)
        ):
            raise TypeError(
                f"{tracking_recorder_class!r} is not a subclass of ObjstoreTrackingRecorder"
            )
        name = (
            self.env.get(self.OBJSTORE_VIEW_NAME)
            or self.env.name
            or tracking_recorder_class.__name__
        )
        epoch_text = (self.env.get(self.OBJSTORE_EPOCH) or "").strip()
        interval = self._number(self.OBJSTORE_COMMIT_INTERVAL, "1.0", float)
        store = CheckpointStore(
            view_root(self.url, name),
            storage_options=dict(self.storage_options),
            verify_fencing=self.verify_fencing,
        )
        return tracking_recorder_class(
            store,
            epoch=self._number(self.OBJSTORE_EPOCH, epoch_text, int) if epoch_text else None,
            commit_every=self._number(self.OBJSTORE_COMMIT_EVERY, "100", int),
            commit_interval=interval if interval > 0 else None,
            keep_checkpoints=self._number(self.OBJSTORE_KEEP_CHECKPOINTS, "3", int),
        )

    def close(self) -> None:
        """Close the shared store and the events module's factory."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._events is not None:
            self._events.close()
            self._events = None
