"""The daemon with a `planner:` policy: one Planner per policy, fed each evaluation from the counters and gauges
Prometheus answers, its plan clamped by min/max and capacity, its reason in the status and the Events.

The Kubernetes side (the target's /scale, Events, the status annotation) is a recording double; Prometheus answers
are modelled as /api/v1/query vectors (tests/unit/test_autoscaler_planner_policy.Prometheus)."""

from __future__ import annotations

import asyncio
import json

import yaml

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.algorithm import Capacity, Reason
from autoscaler.planned import PlannerFeed, PlannerSignals, increments, planned_decision
from autoscaler.planner import Plan
from autoscaler.policy import parse_policy
from autoscaler.reconciler import Autoscaler, PolicyRuntime
from autoscaler.targets import ScaleState
from tests.unit.test_autoscaler_planner_policy import PLANNER, Prometheus, doc

INTERVAL = 15.0


class Targets:
    def __init__(self, replicas: int) -> None:
        self.replicas, self.writes = replicas, []

    async def read(self, namespace, ref) -> ScaleState:
        return ScaleState(self.replicas, None)

    async def pods(self, namespace, selector):
        return [], 0

    async def write(self, namespace, ref, replicas, state=None) -> None:
        self.writes.append(replicas)
        self.replicas = replicas


class Daemon(Autoscaler):
    """The reconciler with the API calls recorded instead of sent."""

    def __init__(self, replicas: int, prometheus: Prometheus, t0: float = 1_000_000.0) -> None:
        self.t = t0
        super().__init__(api=None, prometheus_url=None, clock=lambda: self.t, wall_clock=lambda: self.t)
        self.prometheus = prometheus
        self.targets = Targets(replicas)
        self.events: list[tuple[str, str]] = []
        self.statuses: list[dict] = []

    async def _event(self, ns, involved, reason, message, warning) -> None:
        self.events.append((reason, message))

    async def _write_status(self, key, rt, status) -> None:
        self.statuses.append(status)


class Load:
    """vLLM's counters and gauges on two pods, advanced by a load level (prompt tokens/s, requests/s)."""

    def __init__(self) -> None:
        self.tokens = {"a": 0.0, "b": 0.0}
        self.requests = {"a": 0.0, "b": 0.0}
        self.waiting = 0
        self.running = 0
        self.prom = Prometheus({})
        self.publish()

    def run(self, seconds: float, tps: float, rps: float) -> None:
        for pod in self.tokens:  # split evenly over the pods
            self.tokens[pod] += tps * seconds / 2
            self.requests[pod] += rps * seconds / 2
        self.publish()

    def publish(self) -> None:
        self.prom.series = {
            "vllm:prompt_tokens_total": [({"pod": p}, v) for p, v in self.tokens.items()],
            "vllm:request_success_total": [({"pod": p, "finished_reason": "stop"}, v)
                                           for p, v in self.requests.items()],
            "vllm:num_requests_waiting": [({"pod": "a"}, self.waiting)],
            "vllm:num_requests_running": [({"pod": "a"}, self.running)]}


def daemon_with(planner: dict | None = None, replicas: int = 1, **fields):
    policy = parse_policy("llm", "prefill-policy", doc(planner or PLANNER, evaluationIntervalSeconds=INTERVAL,
                                                       **fields))
    load = Load()
    d = Daemon(replicas, load.prom)
    return d, PolicyRuntime(policy, "1"), load


def step(d: Daemon, rt: PolicyRuntime, load: Load, tps: float, rps: float = 10.0):
    load.run(INTERVAL, tps, rps)
    d.t += INTERVAL
    return asyncio.run(d.evaluate(rt.policy.key, rt))


def test_the_first_evaluation_only_reads_the_counters_and_holds():
    d, rt, load = daemon_with()
    first = asyncio.run(d.evaluate(rt.policy.key, rt))
    assert (first.desired, first.reason) == (1, Reason.WITHIN_TOLERANCE)
    assert "first reading of the planner's counters" in first.message
    assert rt.feed is not None and len(rt.feed.planner.tokens) == 0 and d.targets.writes == []


def test_a_load_of_three_replicas_scales_the_prefill_pool_to_three_with_the_planners_reason():
    d, rt, load = daemon_with()  # 12000 tok/s per replica, TTFT 2 s
    asyncio.run(d.evaluate(rt.policy.key, rt))
    decision = step(d, rt, load, tps=30_000)
    plan = rt.feed.last_plan
    assert (plan.prefill, decision.desired, d.targets.writes) == (3, 3, [3])
    assert decision.reason == Reason.SCALE_UP
    assert len(rt.feed.planner.tokens) == INTERVAL  # one evaluation's increase over 15 one-second bins
    assert sum(rt.feed.planner.tokens) == 30_000 * INTERVAL
    status = d.statuses[-1]
    assert status["desiredReplicas"] == 3 and status["planner"]["reason"] == plan.reason
    assert status["planner"]["prefill"] == 3 and status["planner"]["forecastPromptTokensPerSecond"] == 30_000
    assert "planner prefill = 3" in status["message"] and plan.reason in status["message"]
    assert [r for r, _ in d.events] == ["ScaledUp"] and plan.reason in d.events[0][1]
    rows = {m["name"]: m for m in status["metrics"]}
    assert rows["Planner(vllm:prompt_tokens_total tok/s)"]["value"] == 30_000


def test_a_load_drop_keeps_the_replicas_for_a_model_load_then_scales_down():
    d, rt, load = daemon_with({**PLANNER, "modelLoadSeconds": 60}, replicas=1)
    asyncio.run(d.evaluate(rt.policy.key, rt))
    assert step(d, rt, load, tps=30_000).desired == 3
    held = [step(d, rt, load, tps=1_000).desired for _ in range(3)]  # 45 s < one model load
    assert held == [3, 3, 3]  # the burst headroom of the last hour's history, and the hold, keep it
    later = [step(d, rt, load, tps=1_000).desired for _ in range(400)]  # the forecast's history ages out too
    assert later[-1] == 1 and d.targets.writes[-1] == 1


def test_the_decode_role_takes_the_decode_count_from_sequences_in_flight():
    d, rt, load = daemon_with({**PLANNER, "role": "Decode", "decodeSlots": 64})
    asyncio.run(d.evaluate(rt.policy.key, rt))
    load.running, load.waiting = 150, 10
    decision = step(d, rt, load, tps=100)
    assert rt.feed.last_obs.decode_in_flight == 160
    assert decision.desired == rt.feed.last_plan.decode == 3  # ceil(160 / 64)
    assert "planner decode = 3" in decision.message


def test_the_plan_is_clamped_by_max_replicas_and_by_what_fits():
    d, rt, load = daemon_with(maxReplicas=4)
    asyncio.run(d.evaluate(rt.policy.key, rt))
    over = step(d, rt, load, tps=100_000)
    assert over.desired == 4 and over.reason == Reason.MIN_MAX and "held within 1..4" in over.message
    d2, rt2, load2 = daemon_with()
    d2.capacity = lambda p, pending: Capacity(1, 0, "room for 1 more 1x0 gang(s)")
    asyncio.run(d2.evaluate(rt2.policy.key, rt2))
    blocked = step(d2, rt2, load2, tps=60_000)
    assert rt2.feed.last_plan.prefill == 5
    assert (blocked.desired, blocked.blocked_by_capacity, blocked.reason) == (2, 3, Reason.CAPACITY_BLOCKED)
    assert "BlockedByCapacity" in [r for r, _ in d2.events]


def test_a_missing_signal_holds_and_does_not_feed_the_planner():
    d, rt, load = daemon_with()
    asyncio.run(d.evaluate(rt.policy.key, rt))
    step(d, rt, load, tps=30_000)
    fed = len(rt.feed.planner.tokens)
    load.prom.down = {"vllm:num_requests_running"}
    held = step(d, rt, load, tps=90_000)
    assert (held.desired, held.reason) == (3, Reason.NO_METRICS) and "query failed" in held.message
    assert len(rt.feed.planner.tokens) == fed
    assert d.statuses[-1]["conditions"][0]["status"] == "False" and "reason" not in d.statuses[-1]["planner"]
    load.prom.down = set()
    back = step(d, rt, load, tps=90_000)  # the increase spans both intervals, spread over their 30 bins
    assert len(rt.feed.planner.tokens) == fed + 2 * INTERVAL and back.desired > 3


def test_scale_to_zero_goes_to_zero_after_the_idle_time_and_wakes_on_a_queued_request():
    d, rt, load = daemon_with({**PLANNER, "scaleToZero": True, "idleToZeroSeconds": 120}, replicas=1,
                              minReplicas=0)
    asyncio.run(d.evaluate(rt.policy.key, rt))
    assert step(d, rt, load, tps=5_000).desired == 1
    quiet = [step(d, rt, load, tps=0, rps=0).desired for _ in range(7)]  # 105 s without a request
    assert quiet == [1] * 7
    assert [step(d, rt, load, tps=0, rps=0).desired for _ in range(2)] == [0, 0]  # 120 s: idle
    assert "to zero" in rt.feed.last_plan.reason
    load.waiting = 1
    assert step(d, rt, load, tps=0, rps=0).desired == 1


def test_editing_the_planner_section_starts_a_new_planner_and_other_edits_keep_it(monkeypatch):
    import kubernetes_asyncio.client as kc

    d, rt, load = daemon_with()
    asyncio.run(d.evaluate(rt.policy.key, rt))
    step(d, rt, load, tps=30_000)
    feed = rt.feed
    d.runtimes[rt.policy.key] = rt
    listed: dict = {}

    class Listing:  # what list_config_map_for_all_namespaces(_preload_content=False) answers
        async def read(self) -> bytes:
            return json.dumps(listed).encode()

    async def list_all(self, **kw):
        return Listing()

    monkeypatch.setattr(kc.CoreV1Api, "list_config_map_for_all_namespaces", list_all)
    same = yaml.safe_dump(doc(PLANNER, evaluationIntervalSeconds=INTERVAL, dryRun=True))
    changed = yaml.safe_dump(doc({**PLANNER, "decodeSlots": 32}, evaluationIntervalSeconds=INTERVAL))
    for text, rv, kept in ((same, "2", True), (changed, "3", False)):
        listed["items"] = [{"metadata": {"namespace": "llm", "name": "prefill-policy", "resourceVersion": rv},
                            "data": {"policy.yaml": text}}]
        asyncio.run(d.load_policies())
        assert (d.runtimes[rt.policy.key].feed is feed) == kept


def test_counter_increments_survive_resets_and_new_series():
    a, b, c = (frozenset({("pod", x)}) for x in "abc")
    assert increments(None, {a: 5}) == 0
    assert increments({a: 10, b: 4}, {a: 15, b: 1, c: 100}) == 5 + 1  # b restarted; c is new: from now on
    assert increments({a: 10}, {}) == 0


plans = st.builds(lambda p, dc: Plan(p, dc, "r", 0.0, p, p, float(dc)), st.integers(0, 50), st.integers(0, 50))


@settings(max_examples=300, deadline=None)
@given(plans, st.integers(0, 20), st.integers(0, 5), st.integers(1, 20), st.sampled_from(["Prefill", "Decode",
                                                                                          "Aggregated"]),
       st.one_of(st.none(), st.integers(0, 10)))
def test_a_planned_decision_stays_within_min_max_and_never_grows_past_what_fits(plan, current, lo, span, role, fits):
    policy = parse_policy("llm", "p", doc({**PLANNER, "role": role}, minReplicas=lo, maxReplicas=lo + span))
    capacity = None if fits is None else Capacity(fits)
    d = planned_decision(policy, current, plan, PlannerSignals(gauges={"waiting": 0, "running": 0}), None, capacity)
    if current == 0 and lo > 0:
        assert d.desired == 0 and d.reason == Reason.SCALING_DISABLED
        return
    wanted = {"Prefill": plan.prefill, "Decode": plan.decode, "Aggregated": max(plan.prefill, plan.decode)}[role]
    clamped = min(max(wanted, lo), lo + span)
    if d.desired > current:
        assert d.desired <= clamped and (fits is None or d.desired - current <= fits)
    if d.blocked_by_capacity == 0:
        assert d.desired == clamped
    else:
        assert d.desired + d.blocked_by_capacity == clamped and d.reason == Reason.CAPACITY_BLOCKED


def test_a_feed_spreads_a_late_evaluations_increase_over_the_seconds_it_covers():
    policy = parse_policy("llm", "p", doc(evaluationIntervalSeconds=INTERVAL))
    feed = PlannerFeed.for_policy(policy)
    key = frozenset({("pod", "a")})

    def sig(tokens):
        return PlannerSignals({"promptTokens": {key: tokens}, "requests": {key: tokens / 100}},
                              {"waiting": 0, "running": 0})
    assert feed.plan(100.0, sig(0), 1) is None
    feed.plan(160.0, sig(60_000), 1)  # 60 s late: 60 bins of 1000 tokens
    assert list(feed.last_obs.prompt_tokens) == [1000.0] * 60 and feed.prompt_rate() == 1000.0
