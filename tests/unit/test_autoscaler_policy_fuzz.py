"""Whatever a policy file or ConfigMap holds, validation answers with a Policy or a PolicyError naming the field:
never another exception, never a silent success. The daemon reports each invalid ConfigMap and keeps serving
the valid ones."""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LONG_EXAMPLES = int(os.environ.get("CLIQUE_FUZZ_EXAMPLES", "0"))  # the long fuzz run (readme-fuzz)

from autoscaler.policy import POLICY_LABEL, Policy, PolicyError, parse_policy, policies_in_file
from clique.cli import main as clique_main

GOOD = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "decode"},
        "minReplicas": 1, "maxReplicas": 4, "podsPerReplica": 2, "scaleUnit": "Pods",
        "gang": {"gpusPerPod": 8, "cpuPerPod": "500m", "memoryPerPod": "64Gi", "topologyRequired": "nvl",
                 "nodeSelector": {"pool": "a"}},
        "metrics": [{"type": "QueueDepth", "queueDepth": {"selector": {"namespace": "llm"}},
                     "target": {"type": "AverageValue", "averageValue": 4}},
                    {"type": "Latency", "latency": {"histogram": "vllm:ttft_seconds", "quantile": 0.9, "window": "1m"},
                     "target": {"type": "Value", "value": 0.5}}],
        "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]},
                     "scaleDown": {"stabilizationWindowSeconds": 60, "tolerance": 0.1}}}


def policy_yaml(**fields) -> str:
    return yaml.safe_dump({**GOOD, **fields})


def latency(quantile) -> list:
    return [{"type": "Latency", "latency": {"histogram": "h", "quantile": quantile}, "target": {"type": "Value",
                                                                                                "value": 1}}]


def configmap(data: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\n{data}"


# (scenario, file content, whether it is a policy text the daemon could read from a ConfigMap, expected substrings)
PROBES = [
    ("binary bytes", bytes(range(256)), False, ["not UTF-8 text (byte 0x80 at offset 128)"]),
    ("UTF-16 text", policy_yaml().encode("utf-16"), False, ["not UTF-8 text", "UTF-16 byte-order mark"]),
    ("Latin-1 text", "# café\n".encode("latin-1") + policy_yaml().encode(), False, ["not UTF-8 text (byte 0xe9"]),
    ("a list nested 10,000 deep", "[" * 10_000 + "]" * 10_000, True, ["nested more than 32 levels deep"]),
    ("a mapping nested 10,000 deep", "a: " + "{a: " * 10_000 + "1" + "}" * 10_000, True,
     ["nested more than 32 levels deep"]),
    ("ConfigMap data is a list", configmap("metadata: {name: p}\ndata: [a]\n"), False,
     ["ConfigMap default/p", "data: ['a'] must be a mapping"]),
    ("ConfigMap metadata is a list", configmap("metadata: [x]\ndata: {policy.yaml: 'a: 1'}\n"), False,
     ["metadata: ['x'] must be a mapping"]),
    ("ConfigMap metadata is a string", configmap("metadata: hi\n"), False, ["metadata: 'hi' must be a mapping"]),
    ("ConfigMap policy.yaml is not a string", configmap("metadata: {name: p}\ndata: {policy.yaml: {a: 1}}\n"),
     False, ["data.policy.yaml: {'a': 1} must be a string"]),
    ("labelled ConfigMap without policy.yaml",
     configmap(f"metadata: {{name: p, labels: {{{POLICY_LABEL}: 'true'}}}}\ndata: {{other: x}}\n"), False,
     ["data.policy.yaml: missing"]),
    ("a 5,000-digit minReplicas", policy_yaml().replace("minReplicas: 1", "minReplicas: " + "9" * 5000), True,
     ["minReplicas: '9999", "must be an integer from 0 to 100000"]),
    ("a 5,000-digit name", policy_yaml().replace("name: decode", "name: " + "9" * 5000), True, []),  # text: valid
    ("gpusPerPod: true", policy_yaml(gang={"gpusPerPod": True}), True,
     ["gang.gpusPerPod: true must be a number or quantity from 0 to 1024"]),
    ("gpusPerPod: .nan", policy_yaml(gang={"gpusPerPod": float("nan")}), True, ["gang.gpusPerPod: nan must be"]),
    ("gpusPerPod: .inf", policy_yaml(gang={"gpusPerPod": float("inf")}), True, ["gang.gpusPerPod: inf must be"]),
    ("memoryPerPod past the decimal range", policy_yaml(gang={"memoryPerPod": "1e999999Ei"}), True,
     ["gang.memoryPerPod: '1e999999Ei' must be"]),
    ("evaluationIntervalSeconds: .nan", policy_yaml(evaluationIntervalSeconds=float("nan")), True,
     ["evaluationIntervalSeconds: nan must be a number above 0 and at most 3600"]),
    ("latency.quantile a mapping", policy_yaml(metrics=latency({"a": 1})), True,
     ["metrics[0].latency.quantile: {'a': 1} must be a number above 0 and below 1"]),
    ("latency.quantile '0x10'", policy_yaml(metrics=latency("0x10")), True, ["metrics[0].latency.quantile: '0x10'"]),
    ("latency.quantile 'Utilization'", policy_yaml(metrics=latency("Utilization")), True,
     ["metrics[0].latency.quantile: 'Utilization'"]),
    ("target value .inf", policy_yaml(metrics=[{"type": "QueueDepth", "target": {"type": "Value",
                                                                                 "value": float("inf")}}]), True,
     ["metrics[0].target.value: inf must be a number or quantity above 0"]),
    ("endpoints a number", policy_yaml(metrics=[{"type": "QueueDepth", "queueDepth": {"source": "Scrape",
                                                                                      "endpoints": 5},
                                                 "target": {"type": "Value", "value": 1}}]), True,
     ["metrics[0].queueDepth.endpoints: 5 must be a list"]),
    ("selector value a list", policy_yaml(metrics=[{"type": "QueueDepth", "queueDepth": {"selector": {"a": [1]}},
                                                    "target": {"type": "Value", "value": 1}}]), True,
     ["metrics[0].queueDepth.selector: {'a': [1]} must map label names to string values"]),
    ("behavior: 5", policy_yaml(behavior=5), True, ["behavior: 5 must be a mapping"]),
    ("behavior.scaleUp a list", policy_yaml(behavior={"scaleUp": [1]}), True,
     ["behavior.scaleUp: [1] must be a mapping"]),
    ("behavior policies a number", policy_yaml(behavior={"scaleUp": {"policies": 5}}), True,
     ["behavior.scaleUp.policies: 5 must be a list"]),
    ("behavior policies a string", policy_yaml(behavior={"scaleDown": {"policies": "Pods"}}), True,
     ["behavior.scaleDown.policies: 'Pods' must be a list"]),
    ("behavior policy value .inf", policy_yaml(behavior={"scaleUp": {"policies": [
        {"type": "Pods", "value": float("inf"), "periodSeconds": 15}]}}), True,
     ["behavior.scaleUp.policies[0].value: inf must be an integer from 1 to 1000000"]),
    ("behavior tolerance past the decimal range", policy_yaml(behavior={"scaleUp": {"tolerance": "1e1000000"}}), True,
     ["behavior.scaleUp.tolerance: '1e1000000' must be"]),
    ("an impossible date", policy_yaml().replace("minReplicas: 1", "minReplicas: 2001-13-45"), True,
     ["not valid YAML"]),
    ("a bool tag on a non-bool", policy_yaml().replace("dryRun", "x") + "dryRun: !!bool maybe\n", True,
     ["not valid YAML"]),
    ("a timestamp tag on text", policy_yaml() + "dryRun: !!timestamp someday\n", True, ["not valid YAML"]),
    ("an empty file", "", False, ["no policy found"]),
    ("a self-referencing alias", "&a [*a]\n", True, ["[[[...]]] must be a mapping"]),
    ("several documents, none a mapping", "--- 1\n--- [a]\n--- hello\n", False,
     ["document 1: 1 must be a mapping", "document 2: ['a'] must be a mapping", "document 3: 'hello' must be"]),
]


@pytest.mark.parametrize("content, daemon_text, needles", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_each_probe_that_used_to_crash_is_a_validation_error_naming_the_field(tmp_path, capsys, content,
                                                                           daemon_text, needles):
    path = tmp_path / "policy.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    results = policies_in_file(str(path))
    errors = [r for r in results if isinstance(r, PolicyError)]
    if not needles:  # the one probe that is a valid policy
        assert [type(r) for r in results] == [Policy]
        return
    assert errors, results
    text = "\n".join(str(e) for e in errors)
    assert all(e.problems and str(path) in e.where for e in errors)
    for needle in needles:
        assert needle in text
    # the CLI entry, in-process: exit status 1 and one line per error, "<where>: invalid: <problems>"
    assert clique_main(["autoscaler", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{e.where}: invalid: {'; '.join(e.problems)}" for e in errors]
    if daemon_text:  # the daemon reads the same text from a ConfigMap's policy.yaml
        with pytest.raises(PolicyError) as err:
            parse_policy("llm", "cm", content)
        for needle in needles:
            assert needle in str(err.value)


def test_a_valid_file_still_validates_and_exits_zero(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(policy_yaml() + "---\n")  # a trailing empty document is not a problem
    assert clique_main(["autoscaler", "validate", str(path)]) == 0
    assert "ok (StatefulSet/decode, 1..4 replicas of 2 pod(s), 2 metric(s))" in capsys.readouterr().out


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path, capsys):
    assert clique_main(["autoscaler", "validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: invalid: cannot read it (No such file or directory)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ property tests
FIELD_PATHS = [
    ("scaleTargetRef",), ("scaleTargetRef", "name"), ("scaleTargetRef", "service"), ("minReplicas",),
    ("maxReplicas",), ("podsPerReplica",), ("scaleUnit",), ("evaluationIntervalSeconds",), ("dryRun",),
    ("capacityAware",), ("gang",), ("gang", "gpusPerPod"), ("gang", "cpuPerPod"), ("gang", "memoryPerPod"),
    ("gang", "topologyRequired"), ("gang", "nodeSelector"), ("gang", "nodeSelector", "pool"), ("metrics",),
    ("metrics", 0), ("metrics", 0, "type"), ("metrics", 0, "queueDepth"), ("metrics", 0, "queueDepth", "source"),
    ("metrics", 0, "queueDepth", "selector"), ("metrics", 0, "queueDepth", "endpoints"),
    ("metrics", 0, "queueDepth", "metric"), ("metrics", 0, "target"), ("metrics", 0, "target", "type"),
    ("metrics", 0, "target", "averageValue"), ("metrics", 1, "latency", "quantile"),
    ("metrics", 1, "latency", "window"), ("metrics", 1, "latency", "histogram"), ("metrics", 1, "target", "value"),
    ("behavior",), ("behavior", "scaleUp"), ("behavior", "scaleUp", "policies"), ("behavior", "scaleUp", "policies", 0),
    ("behavior", "scaleUp", "policies", 0, "value"), ("behavior", "scaleUp", "policies", 0, "periodSeconds"),
    ("behavior", "scaleDown", "stabilizationWindowSeconds"), ("behavior", "scaleDown", "tolerance"),
    ("behavior", "scaleDown", "selectPolicy"),
]
HUGE, DEEP = "HUGE_INT_MARK", "DEEP_NEST_MARK"  # dumped as plain scalars, then swapped for raw YAML
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0x10", "Utilization", "Pods", "Percent", "Max", "Scrape", "Latency", "Prometheus", "Value",
                     "AverageValue", "64Gi", "500m", "1e999999", "-1", "nan", "1m", "", HUGE, DEEP]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "value", "policies", "scaleUp", "apiVersion", "kind", "name"]) | st.text(max_size=6),
    inner, max_size=3), max_leaves=12)


def place(doc: dict, path: tuple, value) -> None:
    """Set doc[path] = value, making the containers on the way (a list where the next key is an index)."""
    node = doc
    for i, key in enumerate(path):
        if isinstance(node, list):
            node.extend([None] * (key + 1 - len(node)))
        if i == len(path) - 1:
            node[key] = value
            return
        kind = list if isinstance(path[i + 1], int) else dict
        if not isinstance(node[key] if isinstance(node, list) else node.get(key), kind):
            node[key] = kind()
        node = node[key]


def raw_yaml(doc) -> str:
    text = yaml.safe_dump(doc)
    return text.replace(HUGE, "9" * 5000).replace(DEEP, "[" * 2000 + "]" * 2000)


@settings(max_examples=max(200, LONG_EXAMPLES), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(FIELD_PATHS), values), min_size=1, max_size=3))
def test_random_values_at_policy_fields_give_a_policy_or_an_error_naming_a_changed_field(changes):
    doc = copy.deepcopy(GOOD)
    for path, value in changes:
        place(doc, path, value)
    try:
        parse_policy("llm", "p", raw_yaml(doc))
    except PolicyError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
        text = str(err)
        assert "not valid YAML" in text or "nested more than" in text or \
            any(path[0] in text for path, _ in changes), (changes, text)


@settings(max_examples=max(200, LONG_EXAMPLES), deadline=None)
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200),
                         st.text(alphabet="[]{}:,-&*!|>'\"#%@` \n\t0123456789abc.x~?", max_size=120)))
def test_random_text_and_bytes_give_a_policy_or_an_error(tmp_path_factory, content):
    try:
        parse_policy("llm", "p", content)
    except PolicyError as err:
        assert err.problems
    path = tmp_path_factory.mktemp("fuzz") / "policy.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    results = policies_in_file(str(path))
    assert results and all(isinstance(r, (Policy, PolicyError)) for r in results)
