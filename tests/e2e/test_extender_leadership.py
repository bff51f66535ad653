"""Two extenders beside one kube-scheduler that holds its leader-election Lease (as the shipped Deployment runs two
replicas, manifests/scheduler/deployment.yaml): with --follow-lease only the extender whose identity is the Lease's
holder acts (releases gated gangs, pins at creation); the other's webhook only routes and gates
(scheduler/extender/leadership.py). On the real kube-apiserver and kube-scheduler v1.37.2 (leader election on, its
holder identity `<hostname>_<uuid>`) with KWOK nodes. Side effects: two extenders, a kube-scheduler, KWOK nodes,
two namespaces and a Lease, removed or left to the session's control plane at the end."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
import uuid

import pytest
from kubernetes import client

from scheduler.extender.pinning import GATE, PINNED
from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
from simulations.controlplane.processes import free_port
from tests.e2e.helpers import opted_in_namespaces, wait_for
from tests.e2e.test_extender import gang_pod, new_pool
from tests.e2e.test_pin_at_creation import _counter, _gates, _pins
from tests.unit.test_admission import mint_certs

# system:kube-scheduler may get and update only a Lease named kube-scheduler (k8s.io/kubernetes v1.37.2
# plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go): that name, in a namespace of this test's own
LEASE = "kube-scheduler"


def _acting(port: int) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next((ln for ln in text.splitlines() if ln.startswith("clique_extender_acting ")), None)
    return float(line.split()[-1]) if line else None


@pytest.fixture(scope="module")
def pair(control_plane, tmp_path_factory):
    work = tmp_path_factory.mktemp("leadership")
    ca = mint_certs(work / "tls")
    lease_ns = f"lease-{uuid.uuid4().hex[:5]}"
    control_plane.create_namespace(lease_ns)
    hook = free_port()
    common = dict(preset="gb200-nvl72", bind_timeout_s=8, follow_lease=f"{lease_ns}/{LEASE}")
    # the standby serves the webhook the API server calls, with pinning at creation on: it must gate instead
    standby, standby_port = start_extender(control_plane.kubeconfig, work / "standby.log", identity="standby-host",
                                           webhook_port=hook, webhook_cert_dir=work / "tls", **common)
    acting, acting_port = start_extender(control_plane.kubeconfig, work / "acting.log",
                                         identity=socket.gethostname(), **common)  # kube-scheduler's os.Hostname()
    api = control_plane.api_client()
    try:
        cfg = clique_scheduler_config(acting_port)
        cfg["leaderElection"] = {"leaderElect": True, "resourceName": LEASE, "resourceNamespace": lease_ns}
        control_plane.start_scheduler(cfg, name="clique-scheduler")
        coord = client.CoordinationV1Api(api)

        def holder() -> str | None:
            try:
                return coord.read_namespaced_lease(LEASE, lease_ns).spec.holder_identity
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                return None  # not created yet

        holder = wait_for(holder, 30, "kube-scheduler to take its Lease")
        assert holder.startswith(socket.gethostname() + "_")
        wait_for(lambda: _acting(acting_port) == 1, 30, "the extender beside the leader to act")
        prefix, names, domain = new_pool(api, domains=2, hosts=4)
        probe = gang_pod("probe", "probe", 4, pool=prefix)
        with opted_in_namespaces(control_plane, api, hook, ca.read_bytes(), "lead", probe) as (on, _):
            yield {"core": client.CoreV1Api(api), "ns": on, "pool": prefix, "domain": domain,
                   "standby": standby_port, "acting": acting_port, "lease_ns": lease_ns, "cfg": cfg,
                   "coord": coord, "work": work}
    finally:
        control_plane.stop_component("clique-scheduler")
        stop_extender(standby)
        stop_extender(acting)
        client.CoreV1Api(api).delete_namespace(lease_ns)
        api.close()


def test_only_the_extender_beside_the_lease_holder_acts(pair):
    # the standby read the Lease and judged it held by another (its gauge alone starts at 0 before any read)
    said = wait_for(lambda: "holder " + socket.gethostname() + "_" in (log := (pair["work"] / "standby.log")
                                                                      .read_text()) and log, 30, "the standby's view")
    assert "extender standby-host: its kube-scheduler does not hold the Lease" in said
    assert _acting(pair["standby"]) == 0 and _acting(pair["acting"]) == 1


def test_a_standby_with_pinning_on_gates_and_the_acting_extender_releases_the_gang_into_one_domain(pair):
    core, ns, domain = pair["core"], pair["ns"], pair["domain"]
    before = {k: _counter(pair[k], "pinned") for k in ("standby", "acting")}
    gang = f"g{uuid.uuid4().hex[:5]}"
    created = [core.create_namespaced_pod(ns, gang_pod(f"{gang}-{i}", gang, 3, pool=pair["pool"]))
               for i in range(3)]
    # the standby's webhook routed them and gated them: no pins, no annotation, so nothing reserved there
    assert {p.spec.scheduler_name for p in created} == {"clique-scheduler"}
    assert [_gates(p) for p in created] == [[GATE]] * 3
    assert all(not _pins(p) and PINNED not in (p.metadata.annotations or {}) for p in created)
    assert _counter(pair["standby"], "pinned_at_creation") == 0

    def bound():
        pods = core.list_namespaced_pod(ns, label_selector=f"gang={gang}").items
        return {p.spec.node_name for p in pods} if len(pods) == 3 and all(p.spec.node_name for p in pods) else None

    hosts = wait_for(bound, 30, "the gang released by the acting extender and bound")
    assert len(hosts) == 3 and len({domain[h] for h in hosts}) == 1
    assert _counter(pair["acting"], "pinned") == before["acting"] + 1
    assert _counter(pair["standby"], "pinned") == before["standby"]  # the standby never released it


def test_when_the_leading_kube_scheduler_stops_the_other_takes_the_lease_and_its_extender_acts_and_pins(
        pair, control_plane):
    """A second kube-scheduler whose hostname is the standby's identity (its own UTS namespace, as a second pod
    has), beside the standby extender; the first kube-scheduler stops and releases the Lease (ReleaseOnCancel,
    k8s.io/kubernetes v1.37.2 cmd/kube-scheduler/app/options/options.go): the standby's kube-scheduler leads,
    its extender acts (its webhook now pins at creation) and the other extender stops acting. Runs last here."""
    from simulations.controlplane.build import ensure_binaries

    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"a UTS namespace for the second kube-scheduler's hostname is not permitted here: {probe.stderr}")
    wrapper = pair["work"] / "kube-scheduler-standby-host"
    wrapper.write_text("#!/bin/sh\n# kube-scheduler with the hostname standby-host (its leader-election identity)\n"
                       f"exec unshare --uts sh -c 'hostname standby-host && exec \"$0\" \"$@\"' "
                       f"{ensure_binaries().kube_scheduler} \"$@\"\n")
    wrapper.chmod(0o755)
    core, coord, ns, domain = pair["core"], pair["coord"], pair["ns"], pair["domain"]
    cfg = {**pair["cfg"], "extenders": [{**pair["cfg"]["extenders"][0],
                                         "urlPrefix": f"http://127.0.0.1:{pair['standby']}"}]}
    try:
        control_plane.start_scheduler(cfg, binary=wrapper, name="clique-scheduler-b")
        holder = lambda: coord.read_namespaced_lease(LEASE, pair["lease_ns"]).spec.holder_identity or ""  # noqa: E731
        assert holder().startswith(socket.gethostname() + "_")  # the first still leads: the second waits
        assert _acting(pair["standby"]) == 0
        control_plane.stop_component("clique-scheduler")
        wait_for(lambda: holder().startswith("standby-host_"), 30, "the second kube-scheduler to take the Lease")
        wait_for(lambda: _acting(pair["standby"]) == 1 and _acting(pair["acting"]) == 0, 30,
                 "the extenders to swap roles")
        gang = f"f{uuid.uuid4().hex[:5]}"
        created = [core.create_namespaced_pod(ns, gang_pod(f"{gang}-{i}", gang, 3, pool=pair["pool"]))
                   for i in range(3)]
        assert [_gates(p) for p in created] == [[], [], []]  # its webhook pins now instead of gating
        assert all(PINNED in (p.metadata.annotations or {}) for p in created)

        def bound():
            pods = core.list_namespaced_pod(ns, label_selector=f"gang={gang}").items
            return {p.spec.node_name for p in pods} if all(p.spec.node_name for p in pods) else None

        hosts = wait_for(bound, 30, "the gang bound by the new leader")
        assert len(hosts) == 3 and len({domain[h] for h in hosts}) == 1
    finally:
        control_plane.stop_component("clique-scheduler-b")
