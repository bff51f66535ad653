"""The daemon's planner path (autoscaler/planned.py, sources.py, reconciler.py) against the offline planner
(`clique replay`): fed what Prometheus holds, it must decide what the offline planner decides.

Issue #16 item 6: `clique replay --kwok` reached 31.3% TTFT attainment where the offline planner reached 87.2% on the
same 600 requests. The cause was pure: the daemon read each counter's latest value once per evaluation and spread
the increase over the evaluation's 15 one-second bins, so the planner's burst headroom (a fluid queue against a 2 s
TTFT SLO) never saw a burst. Now every sample of the evaluation's window is read (a range selector) and each
increment goes into the seconds between its two samples. The twin (`simulations.kwok_replay.daemon_planner`) runs
the daemon's own code, without a cluster, in the replay's model; pure, no I/O."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.planned import FIRST_WINDOW_S, PlannerFeed, PlannerSignals, binned_increments
from autoscaler.policy import parse_policy
from autoscaler.sources import planner_queries, read_planner_signals
from simulations.kwok_replay import daemon_planner, planner_policy_docs, scrape_interval_s
from simulations.replay import ModelConfig, clique_planner, replay
from simulations.workloads import data_file, load_requests
from tests.unit.test_autoscaler_planner_daemon import Daemon, INTERVAL
from tests.unit.test_autoscaler_planner_policy import PLANNER, doc

A = frozenset({("pod", "a")})


@pytest.fixture(scope="module")
def azure_600():
    return load_requests(data_file("azure-code"), 600)


@pytest.mark.parametrize("speedup", [1.0, 30.0])
def test_the_daemons_planner_path_decides_as_the_offline_planner_on_the_azure_code_trace(azure_600, speedup):
    cfg = ModelConfig()
    offline = replay(azure_600, cfg, "clique", clique_planner(cfg))
    twin = replay(azure_600, cfg, "twin", daemon_planner(azure_600, cfg, speedup))
    assert twin.timeline == offline.timeline  # the same replicas at every evaluation
    assert twin.summary()["ttft_slo_attainment"] == offline.summary()["ttft_slo_attainment"] > 0.85


def test_on_three_thousand_requests_the_daemons_path_still_decides_as_the_offline_planner():
    reqs = load_requests(data_file("azure-code"), 3000)  # 18 minutes, ten scale events offline
    cfg = ModelConfig()
    offline = replay(reqs, cfg, "clique", clique_planner(cfg))
    assert replay(reqs, cfg, "twin", daemon_planner(reqs, cfg, 1.0)).timeline == offline.timeline
    assert offline.scale_events >= 5


def test_with_the_counters_scraped_once_per_evaluation_the_burst_headroom_misses_the_bursts(azure_600):
    cfg = ModelConfig()  # what the daemon saw before: one reading per 15 s evaluation
    offline = replay(azure_600, cfg, "clique", clique_planner(cfg)).summary()["ttft_slo_attainment"]
    coarse = replay(azure_600, cfg, "twin", daemon_planner(azure_600, cfg, 1.0, scrape_s=cfg.interval_s))
    assert coarse.summary()["ttft_slo_attainment"] < offline - 0.3


def test_a_compressed_run_scrapes_at_the_planners_bin_and_compresses_every_planner_time():
    cfg = ModelConfig()
    assert scrape_interval_s(cfg, 30) == 0.033 and scrape_interval_s(cfg, 1) == 1.0
    spec = parse_policy("replay", "p", planner_policy_docs(cfg, 30)["prefill"]).planner
    assert (spec.load_s, spec.ttft_slo_s, spec.history_s, spec.idle_to_zero_s) == pytest.approx((2, 2 / 30, 120, 20))


def test_a_burst_between_two_scrapes_lands_in_its_own_second_not_over_the_evaluation():
    # scrapes every second over a 15 s evaluation ending at 115; 3000 tokens arrived between 107 and 108
    rows = [(100.0 + k, 0.0 if k < 8 else 3000.0) for k in range(16)]
    bins, last = binned_increments({A: rows[0]}, {A: rows}, end=115.0, nbins=15, bin_s=1.0)
    assert bins == [0.0] * 7 + [3000.0] + [0.0] * 7 and last == {A: (115.0, 3000.0)}


def test_an_increment_from_before_the_bins_is_spread_over_their_part_of_it_and_a_reset_counts_its_new_value():
    bins, _ = binned_increments({A: (90.0, 100.0)}, {A: [(90.0, 100.0), (104.0, 140.0), (106.0, 5.0)]},
                                end=106.0, nbins=6, bin_s=1.0)
    assert bins == pytest.approx([10.0, 10.0, 10.0, 10.0, 2.5, 2.5])  # 40 over (100, 104], then 5 after a reset


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0, 1e6), st.booleans()), min_size=1, max_size=30),
       st.floats(0.0, 20.0), st.integers(1, 40), st.sampled_from([1.0, 1 / 30]))
def test_bins_hold_every_increment_and_nothing_else(steps, skip, nbins, bin_s):
    t, v, rows = 1000.0, 0.0, [(1000.0, 0.0)]
    expected = 0.0
    for dt, inc, reset in steps:
        t += dt
        new = inc if reset else v + inc
        expected += new if new < v else new - v
        v = new
        rows.append((t, v))
    end = 1000.0 + skip + nbins * bin_s  # the bins may start after, and end before, some samples
    bins, last = binned_increments({A: rows[0]}, {A: rows}, end=end, nbins=nbins, bin_s=bin_s)
    assert len(bins) == nbins and min(bins) >= 0
    assert sum(bins) == pytest.approx(expected, rel=1e-9, abs=1e-6) and last[A] == rows[-1]
    again, _ = binned_increments(last, {A: rows}, end=end + 5, nbins=3, bin_s=bin_s)
    assert again == [0.0, 0.0, 0.0]  # samples already counted are not counted twice


def test_a_new_series_counts_from_its_first_sample_on():
    b = frozenset({("pod", "b")})
    bins, last = binned_increments({}, {b: [(10.0, 500.0), (11.0, 600.0)]}, end=11.0, nbins=2, bin_s=1.0)
    assert bins == [0.0, 100.0] and last[b] == (11.0, 600.0)


class RangePrometheus:
    """Answers as Prometheus' /api/v1/query does for a range selector (a matrix: `values` of [t, "v"]) and, for the
    summed gauges, a vector."""

    url = "http://prometheus:9090"

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float]]] = {"vllm:prompt_tokens_total": [],
                                                              "vllm:request_success_total": []}
        self.gauges = {"vllm:num_requests_waiting": 0.0, "vllm:num_requests_running": 0.0}
        self.asked: list[str] = []

    def scrape(self, t: float, tokens: float, requests: float) -> None:
        self.samples["vllm:prompt_tokens_total"].append((t, tokens))
        self.samples["vllm:request_success_total"].append((t, requests))

    async def query(self, promql: str) -> list[dict]:
        self.asked.append(promql)
        if promql.startswith("sum("):
            name = promql.removeprefix("sum(").split("{")[0]
            return [{"metric": {}, "value": [0, str(self.gauges[name])]}]
        name, window = promql.split("{")[0], promql.split("[")[1].removesuffix("ms]")
        now = self.samples[name][-1][0]
        rows = [[t, str(v)] for t, v in self.samples[name] if t > now - float(window) / 1000]
        return [{"metric": {"__name__": name, "pod": "a"}, "values": rows}]


def test_signals_of_a_range_selector_keep_every_sample_and_the_latest_value():
    spec = parse_policy("llm", "p", doc()).planner
    prom = RangePrometheus()
    for k in range(5):
        prom.scrape(100.0 + k, 10.0 * k, k)
    sig = asyncio.run(read_planner_signals(spec, prom, window_s=2.5))
    assert planner_queries(spec, 2.5)["promptTokens"] == 'vllm:prompt_tokens_total{namespace="llm"}[2500ms]'
    assert sig.error is None and sig.counters["promptTokens"] == {frozenset({("__name__", "vllm:prompt_tokens_total"),
                                                                              ("pod", "a")}): 40.0}
    assert list(sig.samples["promptTokens"].values()) == [[(102.0, 20.0), (103.0, 30.0), (104.0, 40.0)]]


def test_the_daemon_sees_a_one_second_burst_in_its_second_and_asks_only_back_to_its_last_sample():
    policy = parse_policy("llm", "prefill-policy", doc(PLANNER, evaluationIntervalSeconds=INTERVAL))
    prom = RangePrometheus()
    d = Daemon(1, prom, t0=1000.0)
    from autoscaler.reconciler import PolicyRuntime

    rt = PolicyRuntime(policy, "1")
    prom.scrape(1000.0, 0.0, 0.0)
    asyncio.run(d.evaluate(policy.key, rt))  # the first reading primes
    assert prom.asked[0].endswith(f"[{int(FIRST_WINDOW_S * 1000)}ms]")
    for k in range(1, 16):  # 36,000 prompt tokens in the 8th second, nothing else
        prom.scrape(1000.0 + k, 0.0 if k < 8 else 36_000.0, 0.0 if k < 8 else 3.0)
    d.t += INTERVAL
    prom.asked.clear()
    asyncio.run(d.evaluate(policy.key, rt))
    assert prom.asked[0].endswith("[16000ms]")  # back to the sample at 1000 s, plus 1 s
    assert list(rt.feed.last_obs.prompt_tokens) == [0.0] * 7 + [36_000.0] + [0.0] * 7
    assert isinstance(rt.feed, PlannerFeed)


def test_without_timestamps_the_increase_is_still_spread_over_the_evaluation():
    policy = parse_policy("llm", "p", doc(evaluationIntervalSeconds=INTERVAL))
    feed = PlannerFeed.for_policy(policy)

    def sig(tokens: float) -> PlannerSignals:
        return PlannerSignals({"promptTokens": {A: tokens}, "requests": {A: tokens / 100}},
                              {"waiting": 0, "running": 0})
    assert feed.plan(100.0, sig(0), 1) is None
    feed.plan(115.0, sig(15_000), 1)
    assert list(feed.last_obs.prompt_tokens) == [1000.0] * 15


def test_the_bins_end_at_the_newest_sample_not_at_the_evaluations_clock():
    # Prometheus was last scraped at 115 s; the daemon plans at 115.8 s (its queries took that long). Bins up to
    # 115.8 would leave the last one empty and crowd the next evaluation's first.
    policy = parse_policy("llm", "p", doc(evaluationIntervalSeconds=INTERVAL))
    feed = PlannerFeed.for_policy(policy)

    def sig(rows):
        return PlannerSignals({"promptTokens": {A: rows[-1][1]}, "requests": {A: rows[-1][1] / 100}},
                              {"waiting": 0, "running": 0}, None,
                              {"promptTokens": {A: rows}, "requests": {A: [(t, v / 100) for t, v in rows]}})
    assert feed.plan(100.3, sig([(100.0, 0.0)]), 1) is None
    feed.plan(115.8, sig([(100.0 + k, 1000.0 * k) for k in range(16)]), 1)
    assert list(feed.last_obs.prompt_tokens) == [1000.0] * 15  # (100, 115]: one bin per scrape interval
    feed.plan(130.9, sig([(115.0 + k, 15_000.0 + 2000.0 * k) for k in range(16)]), 1)
    assert list(feed.last_obs.prompt_tokens) == [2000.0] * 15  # (115, 130], nothing crowded into the first


@pytest.mark.parametrize("due, now, expected", [
    (100.0, 100.3, 115.0),  # a tick 0.3 s late: still due one interval after it was due
    (100.0, 114.9, 115.0),  # an evaluation that took most of its interval
    (100.0, 131.0, 146.0),  # a whole interval late: one interval from now, no catch-up burst
    (0.0, 1000.0, 1015.0),  # the first evaluation
])
def test_evaluations_keep_to_their_interval_however_late_each_tick_finds_them(due, now, expected):
    from autoscaler.reconciler import next_due

    assert next_due(due, now, INTERVAL) == expected
