"""Priority classes for trace pods, and the openb pod list with them. Pure (files in, data out).

openb's `qos` column holds the pod's Quality of Service: the dataset's README (alibaba/clusterdata,
cluster-trace-gpu-v2023/README.md) describes it as "Quality of Service (e.g., Burstable, Best Effort (BE),
Latency Sensitive (LS))" and links Kubernetes' pod QoS page; the default pod list holds BE (3,398 pods), LS
(4,647), Burstable (100) and Guaranteed (7). The mapping below is fixed (the same for every trace, no tuning):
Kubernetes' own QoS order (BestEffort < Burstable < Guaranteed) with LS, Alibaba's latency-sensitive serving
class, in the top tier beside Guaranteed:

    qos          priority class         value
    BE           openb-best-effort       1000
    Burstable    openb-burstable         2000
    LS           openb-latency-critical  3000
    Guaranteed   openb-latency-critical  3000

A pod list with an integer `priority` column is read as it is (class `priority-<value>`) instead. The high-priority
gangs of the preemption simulation run at PREEMPTOR_PRIORITY, above every class here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from simulations.workloads import OPENB_POD_COLUMNS, Arrival, _require_columns, openb_pods

PREEMPTOR_CLASS = "inference-critical"
PREEMPTOR_PRIORITY = 10_000


@dataclass(frozen=True)
class PriorityClass:
    name: str
    value: int


QOS_CLASSES: dict[str, PriorityClass] = {
    "BE": PriorityClass("openb-best-effort", 1000),
    "Burstable": PriorityClass("openb-burstable", 2000),
    "LS": PriorityClass("openb-latency-critical", 3000),
    "Guaranteed": PriorityClass("openb-latency-critical", 3000),
}


@dataclass(frozen=True)
class Prioritized:
    arrival: Arrival
    priority: PriorityClass


def priority_of(row: dict[str, str], path: Path, line: int) -> PriorityClass:
    """The class of one pod row: its `priority` column when there is one, else its `qos` by QOS_CLASSES."""
    if row.get("priority") not in (None, ""):
        try:
            value = int(row["priority"])
        except ValueError:
            raise ValueError(f"{path}:{line}: priority {row['priority']!r} is not an integer") from None
        return PriorityClass(f"priority-{value}", value)
    qos = (row.get("qos") or "").strip()
    if qos not in QOS_CLASSES:
        raise ValueError(f"{path}:{line}: qos {qos!r} has no priority class; known: {', '.join(QOS_CLASSES)} "
                         f"(or give the file an integer 'priority' column)")
    return QOS_CLASSES[qos]


def prioritized_pods(path: Path, limit: int | None = None) -> list[Prioritized]:
    """openb pods (single-pod gangs, as workloads.openb_pods reads them) with their priority classes, in the
    file's arrival order (creation_time when the file has it)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require_columns(path, reader.fieldnames, OPENB_POD_COLUMNS, "openb-format pod list")
        if not {"qos", "priority"} & set(reader.fieldnames or []):
            raise ValueError(f"{path}: has no 'qos' or 'priority' column, so its pods have no priorities; use "
                             f"openb-default (qos) or a pod list with one of those columns")
        classes = {}
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            classes[row["name"]] = priority_of(row, path, i + 2)
    arrivals, _ = openb_pods(path, limit)
    return [Prioritized(a, classes[a.gang.name]) for a in arrivals]
