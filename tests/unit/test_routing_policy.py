"""The routing MutatingAdmissionPolicy as shipped: the manifest is the module's output, and the policy says what the
webhook's rule says (the e2e test checks it on the real kube-apiserver; here, the text's own shape)."""

from __future__ import annotations

from pathlib import Path

import yaml

from scheduler import gangs
from scheduler.extender import routing_policy
from scheduler.extender.admission import GATED_SOURCES
from scheduler.extender.pinning import GATE

SHIPPED = Path(__file__).parents[2] / "manifests" / "routing" / "routing-policy.yaml"


def test_the_shipped_manifest_is_the_generated_one():
    assert SHIPPED.read_text() == routing_policy.manifest_text(), (
        "regenerate: python -m scheduler.extender.routing_policy > manifests/routing/routing-policy.yaml")
    policy, binding = [d for d in yaml.safe_load_all(SHIPPED.read_text()) if d]
    assert policy["spec"]["failurePolicy"] == "Ignore" and policy["spec"]["reinvocationPolicy"] == "IfNeeded"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"clique.dev/scheduler": "enabled"}}


def test_every_gated_source_and_the_gate_are_named_in_the_patch():
    patch = routing_policy.patch_expression("clique-scheduler", gate=True)
    assert GATE in patch and all(f'"{s}"' in patch for s in GATED_SOURCES)
    source = routing_policy.source_expression()
    assert all(f"'{s}'" in source for s in GATED_SOURCES if s != "clique") and "'clique'" in source


def test_without_the_gate_the_policy_only_sets_the_scheduler():
    patch = routing_policy.patch_expression("clique-scheduler", gate=False)
    assert GATE not in patch and "schedulingGates" not in patch and "/spec/schedulerName" in patch


def test_a_gang_size_is_read_strictly_the_same_way_as_the_policy_does():
    # the policy's CEL matches ^[0-9]{1,18}$ (routing_policy.POSITIVE); int() would also take these
    for loose in (" 4", "+4", "4_0", "٤", "4.0", "", "0", "0000", "1" * 19):
        assert gangs._int(loose) is None, loose
    assert gangs._int("4") == 4 and gangs._int("007") == 7 and gangs._int(3) == 3 and gangs._int(True) is None


def test_bench_admission_summary_takes_medians_and_the_cpu_routing_adds():
    from simulations.bench_admission import summary

    rows = [{"way": w, "creates_per_s": c, "apiserver_cpu_ms_per_pod": a, "extender_cpu_ms_per_pod": e}
            for w, c, a, e in (("none", 300, 3.0, 0.0), ("none", 200, 2.0, 0.0), ("none", 250, 2.5, 0.1),
                               ("policy", 210, 5.0, 0.0), ("policy", 190, 4.0, 0.0), ("policy", 200, 4.5, 0.0),
                               ("webhook", 180, 4.4, 1.2), ("webhook", 190, 4.6, 1.0), ("webhook", 185, 4.5, 1.1))]
    out = summary(rows)
    assert out["none"]["creates_per_s"] == 250 and out["policy"]["apiserver_cpu_ms_per_pod"] == 4.5
    assert out["policy"]["added_cpu_ms_per_pod"] == 2.0  # 4.5 + 0 - (2.5 + median(0, 0, 0.1) = 0)
    assert out["webhook"]["added_cpu_ms_per_pod"] == 3.1  # 4.5 + 1.1 - 2.5
