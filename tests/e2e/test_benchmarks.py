"""The benchmark commands run end to end at small sizes and end with their JSON line. Correctness only:
their timings are reported by the commands themselves, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys


def run_bench(*args: str, timeout: int = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "clique", "bench", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_placement_reports_every_policy():
    result = run_bench("placement", "--quick", "--sizes", "128", "--requests", "8")
    assert result["benchmark"] == "placement"
    policies = {r["policy"]: r for r in result["results"]}
    assert set(policies) == {"clique", "kueue-bestfit", "topology-placement", "kai-topology", "most-allocated",
                            "default-spread", "random-fit"}
    assert policies["clique"]["optimal_share"] == 1.0
    assert all({"p50_ms", "p99_ms", "stranded_gpus", "one_domain_share", "gang_pods", "hosts"} <= set(r) for r in policies.values())


def test_bench_extender_binds_every_gang_through_the_real_api():
    result = run_bench("extender", "--sizes", "200", "--gangs", "3")
    verbs = {r["verb"] for r in result["results"]}
    assert result["benchmark"] == "extender"
    # the per-pod path, and the gated path (gangs released by the extender's own loop, then filter and bind)
    assert verbs == {"filter", "prioritize", "bind", "release", "filter-gated", "bind-gated"}
    assert all(r["nodes"] == 200 and r["rps"] > 0 for r in result["results"])
    # the extender's CPU per request, for every verb it serves (the release is the extender's own loop)
    assert all((r["cpu_ms"] is None) == (r["verb"] == "release") for r in result["results"])
    assert all(r["cpu_ms"] >= 0 for r in result["results"] if r["cpu_ms"] is not None)
    # the gated filters as the extender's own histogram saw them: exactly the 3 gangs' 12 calls
    inside = next(r for r in result["results"] if r["verb"] == "filter-gated")["inside_extender"]
    assert inside["requests"] == 12 and 0 <= inside["over_5ms"] <= 1 and inside["p99_le_ms"] > 0


def test_bench_e2e_compares_the_schedulers_with_no_partial_gangs_and_says_where_the_time_goes():
    result = run_bench("e2e", "--nodes", "64", "--timeout", "120", "--modes",
                       "stock,clique,clique-webhook,clique-filter,kube-workload", "--latency-gangs", "2")
    rows = {r["scheduler"]: r for r in result["results"]}
    assert set(rows) == {"stock", "clique", "clique-webhook", "clique-filter", "kube-workload"}
    assert all(r["pods"] == 32 for r in rows.values())
    for mode in ("clique", "clique-webhook", "clique-filter"):
        assert rows[mode]["partial_gangs"] == 0 and rows[mode]["one_domain_share"] == 1.0
        assert rows[mode]["idle_gang_bound_s"]["gangs"] == 2
    b = rows["clique"]["breakdown"]
    # gated gangs: every member reached the extender with its pinned nodes only, after one release patch each
    assert b["filter_scope_per_pod"] == {"nodes": 1.0} and b["api_writes_per_pod"]["PATCH pods"] == 1.0
    assert b["attempts_per_pod"].get("scheduled") == 1.0 and b["cpu_ms_per_pod"]["kube-apiserver"] > 0
    # routed by the policy inside kube-apiserver: no webhook call (the webhook's cost: bench admission, below)
    assert "webhook_ms_per_pod" not in b
    # pinned at creation by the webhook: each member reaches the extender with its pinned nodes, no release patch
    w = rows["clique-webhook"]["breakdown"]
    assert w["filter_scope_per_pod"] == {"nodes": 1.0} and "PATCH pods" not in w["api_writes_per_pod"]
    assert w["webhook_ms_per_pod"] > 0


def test_bench_admission_routes_every_pod_by_the_policy_and_by_the_webhook_and_costs_them():
    result = run_bench("admission", "--pods", "100", "--rounds", "1")
    rows = {r["way"]: r for r in result["results"]}
    assert rows["none"]["routed"] == 0 and rows["policy"]["routed"] == 100 and rows["webhook"]["routed"] == 100
    assert rows["webhook"]["extender_cpu_ms_per_pod"] > 0  # the webhook is answered by the extender
    assert set(result["summary"]["policy"]) >= {"creates_per_s", "added_cpu_ms_per_pod"}


def test_bench_autoscaler_times_patches_from_both_sources():
    result = run_bench("autoscaler", "--trials", "2", "--steady-minutes", "0.1")
    assert result["benchmark"] == "autoscaler"
    assert {r["source"] for r in result["results"]} == {"prometheus", "scrape"}
    assert all(r["trials"] == 2 and r["max_s"] > 0 for r in result["results"])
    assert set(result["steady"]["scale_events"]) == {"prometheus", "scrape"}
