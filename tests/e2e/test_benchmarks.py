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
    assert set(policies) == {"clique", "kueue-bestfit", "topology-placement", "most-allocated", "default-spread", "random-fit"}
    assert policies["clique"]["optimal_share"] == 1.0
    assert all({"p50_ms", "p99_ms", "stranded_gpus", "one_domain_share", "gang_pods", "hosts"} <= set(r) for r in policies.values())


def test_bench_extender_binds_every_gang_through_the_real_api():
    result = run_bench("extender", "--sizes", "200", "--gangs", "3")
    verbs = {r["verb"] for r in result["results"]}
    assert result["benchmark"] == "extender" and verbs == {"filter", "prioritize", "bind"}
    assert all(r["nodes"] == 200 and r["rps"] > 0 for r in result["results"])


def test_bench_e2e_compares_three_schedulers_with_no_partial_gangs():
    result = run_bench("e2e", "--nodes", "64", "--timeout", "120")
    rows = {r["scheduler"]: r for r in result["results"]}
    assert set(rows) == {"stock", "clique", "kube-workload"}
    assert all(r["pods"] == 32 for r in rows.values())
    assert rows["clique"]["partial_gangs"] == 0 and rows["clique"]["one_domain_share"] == 1.0


def test_bench_autoscaler_times_patches_from_both_sources():
    result = run_bench("autoscaler", "--trials", "2", "--steady-minutes", "0.1")
    assert result["benchmark"] == "autoscaler"
    assert {r["source"] for r in result["results"]} == {"prometheus", "scrape"}
    assert all(r["trials"] == 2 and r["max_s"] > 0 for r in result["results"])
    assert set(result["steady"]["scale_events"]) == {"prometheus", "scrape"}
