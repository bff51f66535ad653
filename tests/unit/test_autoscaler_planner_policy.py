"""The `planner:` section of a policy: parsed with every problem named by its field, never another exception, and
the series the daemon then queries. Pure."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.planned import planner_config
from autoscaler.policy import PLANNER_METRICS, PolicyError, parse_policy, policies_in_file
from autoscaler.sources import planner_queries, read_planner_signals

PLANNER = {"role": "Prefill", "prefillTokensPerSecond": 12000, "decodeSlots": 64, "modelLoadSeconds": 120,
           "ttftSeconds": 2, "selector": {"namespace": "llm"}}


def doc(planner=None, **fields) -> dict:
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "prefill"},
            "minReplicas": 1, "maxReplicas": 8, "planner": PLANNER if planner is None else planner, **fields}


def problems(d: dict) -> str:
    with pytest.raises(PolicyError) as err:
        parse_policy("llm", "prefill-policy", d)
    return str(err.value)


def test_a_planner_policy_needs_no_metrics_and_reads_vllm_series_by_default():
    p = parse_policy("llm", "prefill-policy", doc())
    assert p.metrics == () and p.planner is not None
    s = p.planner
    assert (s.role, s.prefill_tokens_per_s, s.decode_slots, s.load_s, s.ttft_slo_s) == ("Prefill", 12000, 64, 120, 2)
    assert (s.attainment, s.scale_to_zero, s.idle_to_zero_s, s.history_s) == (0.99, False, 600, 3600)
    assert dict(s.series) == PLANNER_METRICS["vllm"] == {
        "promptTokens": "vllm:prompt_tokens_total", "requests": "vllm:request_success_total",
        "waiting": "vllm:num_requests_waiting", "running": "vllm:num_requests_running"}


def test_the_planner_config_takes_bounds_and_interval_from_the_policy():
    p = parse_policy("llm", "p", doc({**PLANNER, "attainment": 0.95}, minReplicas=2, maxReplicas=6,
                                     evaluationIntervalSeconds=10))
    cfg = planner_config(p)
    # up to 4x maxReplicas, so that the daemon can say the plan was held at maxReplicas
    assert (cfg.min_prefill, cfg.max_prefill, cfg.min_decode, cfg.max_decode) == (2, 24, 2, 24)
    assert (cfg.interval_s, cfg.bin_s, cfg.attainment, cfg.load_s, cfg.horizon_s) == (10, 1.0, 0.95, 120, 130)
    stz = parse_policy("llm", "p", doc({**PLANNER, "scaleToZero": True}, minReplicas=0))
    assert planner_config(stz).scale_to_zero and planner_config(stz).min_prefill == 0


def test_renamed_series_replace_the_engines():
    p = parse_policy("llm", "p", doc({**PLANNER, "promptTokensMetric": "my_prompt_tokens_total",
                                      "runningMetric": "my_running"}))
    q = planner_queries(p.planner)
    assert q == {"promptTokens": 'my_prompt_tokens_total{namespace="llm"}',
                 "requests": 'vllm:request_success_total{namespace="llm"}',
                 "waiting": 'sum(vllm:num_requests_waiting{namespace="llm"})',
                 "running": 'sum(my_running{namespace="llm"})'}


@pytest.mark.parametrize("change, needle", [
    ({"prefillTokensPerSecond": 0}, "planner.prefillTokensPerSecond: 0 must be a number above 0"),
    ({"prefillTokensPerSecond": None}, "planner.prefillTokensPerSecond: required"),
    ({"decodeSlots": 0.5}, "planner.decodeSlots: 0.5 must be an integer"),
    ({"modelLoadSeconds": -1}, "planner.modelLoadSeconds: -1 must be a number from 0 to 86400"),
    ({"ttftSeconds": "fast"}, "planner.ttftSeconds: 'fast' must be a number"),
    ({"attainment": 1}, "planner.attainment: 1 must be a number above 0 and below 1"),
    ({"attainment": True}, "planner.attainment: true must be a number"),
    ({"role": "Both"}, "planner.role: 'Both' must be Prefill"),
    ({"engine": "sglang"}, "planner.engine: 'sglang' must be one of vllm"),
    ({"engine": ["vllm"]}, "planner.engine: ['vllm'] must be one of vllm"),
    ({"scaleToZero": "yes"}, "planner.scaleToZero: 'yes' must be true or false"),
    ({"scaleToZero": True}, "planner.scaleToZero: true needs minReplicas: 0 (it is 1)"),
    ({"decodeSlot": 64}, "planner.'decodeSlot': unknown field"),
    ({"selector": ["a"]}, "planner.selector: ['a'] must be a mapping"),
    ({"waitingMetric": 3}, "planner.waitingMetric: 3 must be a non-empty string"),
])
def test_bad_planner_values_make_the_policy_invalid_and_say_which(change, needle):
    planner = {k: v for k, v in {**PLANNER, **change}.items() if v is not None}
    assert needle in problems(doc(planner))


def test_an_empty_or_non_mapping_planner_names_what_it_needs():
    empty = problems(doc({}) | {"planner": None})
    for name in ("prefillTokensPerSecond", "decodeSlots", "modelLoadSeconds", "ttftSeconds"):
        assert f"planner.{name}: required" in empty
    assert "planner: 'fast' must be a mapping" in problems(doc("fast"))


def test_planner_and_metrics_together_are_refused():
    metric = {"type": "QueueDepth", "queueDepth": {"engine": "vllm"}, "target": {"type": "AverageValue",
                                                                                   "averageValue": 4}}
    assert "metrics: a policy with planner: is decided by the planner alone" in problems(doc(metrics=[metric]))


def test_a_file_with_a_bad_planner_policy_still_yields_the_good_one(tmp_path):
    f = tmp_path / "policies.yaml"
    f.write_text(yaml.safe_dump_all([doc(), doc({**PLANNER, "decodeSlots": -3})]))
    good, bad = policies_in_file(str(f))
    assert good.planner is not None
    assert isinstance(bad, PolicyError) and "document 2" in bad.where and "planner.decodeSlots" in str(bad)


values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted({*PLANNER, "attainment", "scaleToZero", "idleToZeroSeconds",
                                                 "historySeconds", "engine", "role", "requestsMetric", "x"})),
                       values, max_size=8))
def test_any_planner_section_gives_a_policy_or_a_policy_error(changes):
    try:
        p = parse_policy("llm", "p", doc({**PLANNER, **changes}, minReplicas=0))
    except PolicyError as exc:
        assert exc.problems and all(x.startswith("planner") for x in exc.problems)
    else:
        cfg = planner_config(p)  # a valid section always makes a valid PlannerConfig
        assert 0 < cfg.attainment < 1 and cfg.prefill_tokens_per_s > 0


class Prometheus:
    """Answers as Prometheus' /api/v1/query does (a vector of {metric, value: [t, "v"]}), per metric name."""

    url = "http://prometheus:9090"

    def __init__(self, series: dict[str, list[tuple[dict, float]]], down: set[str] = frozenset()) -> None:
        self.series, self.down, self.asked = series, down, []

    async def query(self, promql: str) -> list[dict]:
        self.asked.append(promql)
        name = promql.removeprefix("sum(").split("{")[0].split("[")[0]  # a range selector answered as a vector
        if name in self.down:
            raise ConnectionError(f"HTTPConnectionPool(host='prometheus'): Max retries exceeded ({name})")
        rows = self.series.get(name, [])
        if promql.startswith("sum("):
            return [{"metric": {}, "value": [0, str(sum(v for _, v in rows))]}] if rows else []
        return [{"metric": {"__name__": name, **labels}, "value": [0, str(v)]} for labels, v in rows]


def test_signals_keep_counters_per_series_and_sum_gauges():
    spec = parse_policy("llm", "p", doc()).planner
    prom = Prometheus({"vllm:prompt_tokens_total": [({"pod": "a"}, 100), ({"pod": "b"}, 50)],
                       "vllm:request_success_total": [({"pod": "a", "finished_reason": "stop"}, 3)],
                       "vllm:num_requests_waiting": [({"pod": "a"}, 2), ({"pod": "b"}, 1)],
                       "vllm:num_requests_running": [({"pod": "a"}, 7)]})
    sig = asyncio.run(read_planner_signals(spec, prom))
    assert sig.error is None
    assert sorted(sig.counters["promptTokens"].values()) == [50, 100]
    assert sig.gauges == {"waiting": 3, "running": 7}


def test_an_unreachable_prometheus_or_a_missing_series_is_an_error_not_an_exception():
    spec = parse_policy("llm", "p", doc()).planner
    prom = Prometheus({"vllm:prompt_tokens_total": [({}, 1)], "vllm:num_requests_waiting": [({}, 0)]},
                      down={"vllm:num_requests_running"})
    sig = asyncio.run(read_planner_signals(spec, prom))
    assert "requests: no samples from vllm:request_success_total" in sig.error
    assert "running: Prometheus http://prometheus:9090 query failed: HTTPConnectionPool" in sig.error
    assert "no Prometheus URL" in asyncio.run(read_planner_signals(spec, None)).error
