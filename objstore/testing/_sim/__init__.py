"""The deterministic interleaving simulator behind :mod:`objstore.testing.simulate`.

Its modules are private to this package; :mod:`objstore.testing.simulate` reaches them through
the names re-exported here.
"""

from objstore.testing._sim._checkpoint import CheckpointScenario
from objstore.testing._sim._engine import (
    ActorContext,
    ActorSpec,
    CallRecord,
    Decision,
    FaultRates,
    RunResult,
    Scenario,
    Violation,
    World,
    format_schedule,
    parse_schedule,
    run,
)
from objstore.testing._sim._kv import KVScenario
from objstore.testing._sim._others import ProjectionScenario, SnapshotScenario, SourceScenario
from objstore.testing._sim._world import FATES, SimulatedTransport

__all__ = [
    "FATES",
    "ActorContext",
    "ActorSpec",
    "CallRecord",
    "CheckpointScenario",
    "Decision",
    "FaultRates",
    "KVScenario",
    "ProjectionScenario",
    "RunResult",
    "Scenario",
    "SimulatedTransport",
    "SnapshotScenario",
    "SourceScenario",
    "Violation",
    "World",
    "format_schedule",
    "parse_schedule",
    "run",
]
