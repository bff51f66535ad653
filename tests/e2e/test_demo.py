"""The control-plane part of `clique demo` end to end, on its own control plane (it creates the demo cluster's
68 nodes with their fixed names, so it does not share the session's): the stock kube-scheduler and
clique-scheduler place the same TP32 replica, a gang that cannot fit waits whole, and the autoscaler daemon
scales a StatefulSet of gangs up to capacity."""

from __future__ import annotations

from simulations.cli import DEFAULT_SPEC
from simulations.demo_controlplane import run_controlplane_demo
from topology.spec import load_cluster_spec


def test_demo_controlplane_part(tmp_path):
    spec = load_cluster_spec(DEFAULT_SPEC)
    leaf_of = {h.name: h.labels.get("clique.dev/leaf") for h in spec.hosts()}
    res, report = run_controlplane_demo(spec, tmp_path)

    clique = res["clique"]["placement"]
    assert len(clique) == 4 and len({p["node"] for p in clique}) == 4
    assert len({leaf_of[p["node"]] for p in clique}) == 1, f"clique's replica spans leaves: {clique}"
    assert res["clique"]["leaves"] == [leaf_of[clique[0]["node"]]]

    stock = res["stock"]["placement"]
    assert len(stock) == 4 and all(p["leaf"] == leaf_of[p["node"]] for p in stock)
    assert res["stock"]["leaves"] == sorted({p["leaf"] for p in stock})

    waiting = res["waiting"]
    assert waiting["bound"] == 0
    # GangUnschedulable's reason: what the gang needs, inside which level, and the best leaf it found
    assert "tp32-clique-g2 needs" in waiting["event"] and "(4 pods, 32 GPUs) inside one clique.dev/leaf" in \
        waiting["event"] and "leaf" in waiting["event"].rsplit(";", 1)[1], waiting["event"]

    scaler = res["autoscaler"]
    assert scaler["scale_ups"] >= 1 and scaler["blocked_by_capacity"]
    assert scaler["replicas"] == scaler["bound_replicas"] == 4  # 2 gangs fit in each of the 2 NVLink domains
    assert scaler["final_status"]["reason"] == "BlockedByCapacity"
    assert "blocked by capacity" in scaler["blocked_message"]

    assert "## A gang that cannot fit waits whole" in report and (tmp_path / "topology.png").exists()
