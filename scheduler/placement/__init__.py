"""The placement engine (pure): snapshot + gang -> plan or reason; Clique's engine and the baselines."""

from scheduler.placement.baselines import (DefaultSpread, KueueBestFit, MostAllocated, RandomFit, TopologyPlacement,
                                           all_policies)
from scheduler.placement.engine import CliqueEngine, EngineOptions, reference_optimum
from scheduler.placement.types import (Affinity, Assignment, Gang, HostState, Plan, PlanStatus, Proof, Role,
                                       Snapshot)

__all__ = ["Affinity", "Assignment", "CliqueEngine", "DefaultSpread", "EngineOptions", "Gang", "HostState",
           "KueueBestFit", "MostAllocated", "Plan", "PlanStatus", "Proof", "RandomFit", "Role", "Snapshot",
           "TopologyPlacement", "all_policies", "reference_optimum"]
