"""Snapshot's derived arrays (scheduler/placement/types.py) say exactly what its hosts say."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

from scheduler.placement.types import HostState, Snapshot
from tests.unit.placement_builders import LEVELS, tree_hosts
from topology.model import Topology

_host = st.tuples(st.integers(0, 8), st.integers(0, 12), st.integers(0, 64_000), st.integers(0, 80_000),
                  st.integers(0, 2**40), st.integers(0, 2**41), st.integers(0, 110), st.integers(0, 120), st.booleans(),
                  st.booleans())


@given(st.lists(_host, min_size=16, max_size=16))
def test_the_free_matrix_holds_each_hosts_free_resources_in_row_order_and_zeros_for_absent_or_unschedulable(rows):
    infos = tree_hosts(16)
    topo = Topology(infos, LEVELS)
    hosts = {info.name: HostState(info.name, gpus=g, gpus_used=gu, cpu_millis=c, cpu_used=cu, memory=m, memory_used=mu,
                                  pods=p, pods_used=pu, schedulable=ok)
             for info, (g, gu, c, cu, m, mu, p, pu, ok, present) in zip(infos, rows) if present}
    snap = Snapshot(topo, hosts)
    expected = np.array([hosts[n].free if n in hosts else (0, 0, 0, 0) for n in topo.host_names], dtype=np.int64)
    assert np.array_equal(snap.free_matrix, expected)
    again = Snapshot(topo, hosts)
    again.free_vectors  # the other way: derived from the per-host vectors once they exist
    assert np.array_equal(again.free_matrix, expected)
