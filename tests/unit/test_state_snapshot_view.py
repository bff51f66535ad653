"""ClusterState.snapshot (scheduler/extender/state.py) applies reservations incrementally: each snapshot equals
one computed afresh from the pods bound and the reservations asked for, and an earlier snapshot never changes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from scheduler.extender.state import ClusterState
from scheduler.placement.types import HostState
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec

SPEC = parse_cluster_spec({"name": "v", "pools": [{"name": "v", "hosts": 6, "gpus": 8}],
                           "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 3}]})
HOSTS = [h.name for h in SPEC.hosts()]


def _pod(i: int, node: str, gpus: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"},
            "spec": {"nodeName": node, "schedulerName": "x",
                     "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"}}


_reserved = st.dictionaries(st.sampled_from(HOSTS), st.tuples(st.integers(0, 8), st.integers(0, 2000),
                                                              st.integers(0, 2**30), st.integers(0, 4)), max_size=6)
_step = st.one_of(st.tuples(st.just("bind"), st.integers(0, 9), st.sampled_from(HOSTS), st.integers(1, 4)),
                  st.tuples(st.just("delete"), st.integers(0, 9)),
                  st.tuples(st.just("snapshot"), _reserved))


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, min_size=1, max_size=30))
def test_every_snapshot_equals_one_made_afresh_and_earlier_ones_do_not_change(steps):
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in SPEC.hosts()])
    state._set_pods([])
    pods: dict[int, dict] = {}
    taken: list[tuple[object, dict]] = []
    for step in steps:
        if step[0] == "bind":
            _, i, node, gpus = step
            pods[i] = _pod(i, node, gpus)
            state._pod_event("ADDED", pods[i])
        elif step[0] == "delete" and step[1] in pods:
            state._pod_event("DELETED", pods.pop(step[1]))
        elif step[0] == "snapshot":
            reserved = step[1]
            snap = state.snapshot(reserved)
            expected = {}
            for name, n in state.nodes.items():
                h = state._host_state(n)
                r = reserved.get(name, (0, 0, 0, 0))
                expected[name] = HostState(name, h.gpus, h.cpu_millis, h.memory, h.pods, h.gpus_used + r[0],
                                           h.cpu_used + r[1], h.memory_used + r[2], h.pods_used + r[3], h.schedulable)
            assert snap.hosts == expected
            assert snap.free_vectors == {n: h.free for n, h in expected.items()}
            rows = np.array([expected[n].free for n in snap.topology.host_names], dtype=np.int64)
            assert np.array_equal(snap.free_matrix, rows)
            taken.append((snap, {"hosts": dict(snap.hosts), "matrix": snap.free_matrix.copy()}))
    for snap, then in taken:  # later snapshots (and events) left every earlier one as it was
        assert snap.hosts == then["hosts"] and np.array_equal(snap.free_matrix, then["matrix"])
