"""The pure parts of the Kueue harness (simulations/controlplane/kueue.py) and of the model check
(simulations/kueue_check.py): manager config, webhooks, TAS queue objects, pod-group metadata, the /etc/kueue
certificate slot, the seeded check workload and its summary."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement.baselines import KueueBestFit
from scheduler.placement.snapshots import snapshot_from_spec
from simulations.controlplane import kueue as K
from simulations.kueue_check import (LEAF, SPINE, CheckResult, Decision, check_spec, check_workload, domain,
                                     model_pass)
from topology.spec import parse_cluster_spec

# A cut of sigs.k8s.io/kueue v0.17.0 config/components/webhook/ (same structure: service clientConfigs, the
# kustomization's inline strategic-merge patches by webhook name).
MANIFESTS = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mutating-webhook-configuration}
webhooks:
- {name: mdeployment.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-apps-v1-deployment}}, failurePolicy: Fail}
- {name: mpod.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}}, failurePolicy: Fail}
- {name: mresourceflavor.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate-kueue-x-k8s-io-v1beta2-resourceflavor}}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: validating-webhook-configuration}
webhooks:
- {name: vpod.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /validate--v1-pod}}}
- {name: vjobset.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /validate-jobset-x-k8s-io-v1alpha2-jobset}}}
- {name: vclusterqueue.kb.io, clientConfig: {service: {name: webhook-service, namespace: system, path: /validate-kueue-x-k8s-io-v1beta2-clusterqueue}}}
"""
KUSTOMIZATION = """
resources: [manifests.yaml, service.yaml]
patches:
- patch: |-
    apiVersion: admissionregistration.k8s.io/v1
    kind: MutatingWebhookConfiguration
    metadata:
      name: mutating-webhook-configuration
    webhooks:
    - name: mpod.kb.io
      namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kueue-system]}
- patch: |-
    apiVersion: admissionregistration.k8s.io/v1
    kind: ValidatingWebhookConfiguration
    metadata:
      name: validating-webhook-configuration
    webhooks:
    - name: vpod.kb.io
      namespaceSelector:
        matchExpressions:
        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kueue-system]}
"""


@pytest.fixture
def webhook_dir(tmp_path: Path) -> Path:
    (tmp_path / "manifests.yaml").write_text(MANIFESTS)
    (tmp_path / "kustomization.yaml").write_text(KUSTOMIZATION)
    return tmp_path


def test_manager_config_turns_cert_management_leader_election_and_metrics_off_and_tas_on(tmp_path):
    cfg = K.manager_config(9443, 8081, tmp_path / "certs")
    assert cfg["apiVersion"] == "config.kueue.x-k8s.io/v1beta2" and cfg["kind"] == "Configuration"
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": str(tmp_path / "certs")}
    assert cfg["metrics"] == {"bindAddress": "0"}
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:8081"
    assert cfg["integrations"] == {"frameworks": ["pod"]}
    assert cfg["featureGates"] == {"TopologyAwareScheduling": True, "TASProfileMixed": True,
                                   "VisibilityOnDemand": False}
    assert cfg["manageJobsWithoutQueueName"] is False


def test_webhooks_keep_kueues_own_types_and_pods_and_call_the_local_manager(webhook_dir):
    docs = K.webhook_manifests(9443, b"CA PEM", webhook_dir=webhook_dir)
    assert [d["metadata"]["name"] for d in docs] == ["kueue-mutating-webhook-configuration",
                                                     "kueue-validating-webhook-configuration"]
    hooks = {h["name"]: h for d in docs for h in d["webhooks"]}
    assert set(hooks) == {"mpod.kb.io", "mresourceflavor.kb.io", "vpod.kb.io", "vclusterqueue.kb.io"}
    ca = base64.b64encode(b"CA PEM").decode()
    assert hooks["mpod.kb.io"]["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate--v1-pod", "caBundle": ca}
    assert hooks["vclusterqueue.kb.io"]["clientConfig"]["url"].endswith("/validate-kueue-x-k8s-io-v1beta2-clusterqueue")
    for name in ("mpod.kb.io", "vpod.kb.io"):  # the kustomization's patch, and our objectSelector
        assert hooks[name]["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "kueue-system"]
        assert hooks[name]["objectSelector"] == {"matchExpressions": [{"key": K.QUEUE_LABEL, "operator": "Exists"}]}
    assert "objectSelector" not in hooks["mresourceflavor.kb.io"]
    assert hooks["mpod.kb.io"]["failurePolicy"] == "Fail"


def test_tas_queues_chain_topology_flavor_cluster_queue_and_local_queue():
    q = K.TasQueues("ns1", ["clique.dev/spine", "clique.dev/leaf"], {"nvidia.com/gpu": 64, "cpu": 800},
                    node_labels={"clique.dev/pool": "p"}, name="t", local_queue="lq")
    topo, flavor, cq, lq = q.manifests()
    assert [lv["nodeLabel"] for lv in topo["spec"]["levels"]] == ["clique.dev/spine", "clique.dev/leaf",
                                                                  "kubernetes.io/hostname"]
    assert flavor["spec"] == {"topologyName": "t", "nodeLabels": {"clique.dev/pool": "p"}}
    group = cq["spec"]["resourceGroups"][0]
    assert group["coveredResources"] == ["cpu", "nvidia.com/gpu"]
    assert group["flavors"] == [{"name": "t", "resources": [{"name": "cpu", "nominalQuota": "800"},
                                                            {"name": "nvidia.com/gpu", "nominalQuota": "64"}]}]
    assert cq["spec"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ns1"}}
    assert lq["metadata"] == {"name": "lq", "namespace": "ns1"} and lq["spec"] == {"clusterQueue": "t"}
    assert {o["apiVersion"] for o in (topo, flavor, cq, lq)} == {"kueue.x-k8s.io/v1beta2"}


def test_topology_levels_put_the_hostname_last_once_and_refuse_repeats():
    assert K.topology_levels(["kubernetes.io/hostname", "a"]) == ["a", "kubernetes.io/hostname"]
    with pytest.raises(ValueError, match="repeat"):
        K.topology_levels(["a", "a"])


def test_pod_group_meta_names_group_queue_count_and_one_topology_request():
    labels, ann = K.pod_group_meta("g1", 4, "tas", preferred="clique.dev/leaf")
    assert labels == {"kueue.x-k8s.io/queue-name": "tas", "kueue.x-k8s.io/pod-group-name": "g1"}
    assert ann == {"kueue.x-k8s.io/pod-group-total-count": "4",
                   "kueue.x-k8s.io/podset-preferred-topology": "clique.dev/leaf"}
    _, ann = K.pod_group_meta("g1", 2, "tas", required="nvidia.com/gpu.clique")
    assert ann["kueue.x-k8s.io/podset-required-topology"] == "nvidia.com/gpu.clique"
    with pytest.raises(ValueError, match="not both"):
        K.pod_group_meta("g", 2, "q", required="a", preferred="b")
    with pytest.raises(ValueError, match=">= 1"):
        K.pod_group_meta("g", 0, "q")


def _pair(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "tls.crt").write_text(text)
    (d / "tls.key").write_text(text + " key")
    return d


def test_metrics_cert_slot_is_removed_by_its_last_owner_only(tmp_path):
    certs = tmp_path / "etc" / "kueue" / "metrics" / "certs"
    src = _pair(tmp_path / "src", "ours")
    a, b = K.MetricsCertSlot("cp-a", certs), K.MetricsCertSlot("cp-b", certs)
    a.acquire(src)
    b.acquire(src)
    assert (certs / "tls.crt").read_text() == "ours"
    a.release()
    assert (certs / "tls.key").exists()  # b's manager still reads it
    b.release()
    assert not (tmp_path / "etc" / "kueue").exists()


def test_metrics_cert_slot_leaves_a_pair_it_did_not_write(tmp_path):
    certs = _pair(tmp_path / "metrics" / "certs", "theirs")
    slot = K.MetricsCertSlot("cp", certs)
    slot.acquire(_pair(tmp_path / "src", "ours"))
    assert (certs / "tls.crt").read_text() == "theirs"
    slot.release()
    assert (certs / "tls.crt").read_text() == "theirs"


def test_metrics_cert_slot_says_why_when_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception, match="fixed path"):
        K.MetricsCertSlot("cp", blocker / "metrics" / "certs").acquire(tmp_path)


# --------------------------------------------------------------------------------- kueue_check pure parts
def test_check_workload_is_seeded_and_each_gang_asks_for_one_level():
    hosts = [f"h{i}" for i in range(16)]
    assert check_workload(hosts, 8, 10, seed=3) == check_workload(hosts, 8, 10, seed=3)
    prefill, gangs = check_workload(hosts, 8, 30, seed=3)
    assert all(1 <= g <= 7 for g in prefill.values())
    for cg in gangs:
        assert (cg.gang.required_level is None) != (cg.gang.preferred_level is None)
        assert cg.level in (LEAF, SPINE)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_model_pass_never_uses_more_gpus_than_a_host_has(seed):
    spec = parse_cluster_spec(check_spec("p", 2, 2, 2))
    base = snapshot_from_spec(spec)
    _, gangs = check_workload(sorted(base.hosts), 8, 12, seed)
    hosts_per_gang, first = model_pass(KueueBestFit(), base, gangs)
    used: dict[str, int] = {}
    for cg, hosts in zip(gangs, hosts_per_gang):
        for h in hosts or []:
            used[h] = used.get(h, 0) + cg.gang.roles[0].gpus
        if hosts and cg.gang.required_level:
            assert domain(base, hosts, cg.gang.required_level) is not None
    assert all(v <= 8 for v in used.values())
    if first:
        assert first["allocated_gpus"] + first["unallocated_gpus"] == 64


def test_summary_counts_different_domains_only_among_gangs_both_placed():
    res = CheckResult(total_gpus=64, decisions=[
        Decision("a", "required-leaf", "2x8", ["h0", "h1"], ["h0", "h1"], ("s0", "l0"), ("s0", "l0")),
        Decision("b", "preferred-leaf", "2x8", ["h2", "h3"], ["h4", "h5"], ("s0", "l1"), ("s1", "l2")),
        Decision("c", "preferred-spine", "4x8", ["h0", "h6"], None, None, None),
    ])
    s = res.summary()
    assert s["different_domain_share"] == 0.5 and s["different_hosts_share"] == 0.5
    assert s["same_admission_share"] == round(2 / 3, 3)
    assert s["one_domain_share_real"] == round(2 / 3, 3) and s["one_domain_share_model"] == 1.0
    assert s["by_kind"]["preferred-leaf"] == {"gangs": 1, "different_domain": 1}


def test_tas_queues_refuse_a_flavor_without_node_labels_as_kueues_crd_does():
    with pytest.raises(ValueError, match="nodeLabels"):
        K.TasQueues("ns", ["a"], {"nvidia.com/gpu": 8})
