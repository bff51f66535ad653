"""The reconciler: for each policy, when due, read the target and its metrics, ask the placement engine how many
more gangs fit, decide (pure, autoscaler.algorithm), patch, and tell people. Side effects live here and only here.

A policy with a `planner:` section is decided by the look-ahead planner (autoscaler/planner.py) instead of the
HPA rules: one Planner per policy, fed each evaluation from the counters and gauges Prometheus holds
(autoscaler/planned.py says how, and what the per-evaluation bins approximate); its plan goes through the same
min/max and capacity clamp, and its reason into the status and the Events.

Policies are re-listed every tick (ConfigMaps labelled clique.dev/autoscaling-policy=true), so edits apply without
a restart. A policy that fails validation is reported (Event on its ConfigMap, log line, metric, status annotation)
and skipped; every other policy keeps running. Status is written back to the ConfigMap as the annotation
clique.dev/autoscaling-status (JSON), which `clique autoscaler status` prints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.algorithm import Capacity, Decision, History, Reason, decide, record
from autoscaler.planned import FIRST_WINDOW_S, PlannerFeed, hold_decision, planned_decision
from autoscaler.policy import POLICY_KEY, POLICY_LABEL, Policy, PolicyError, parse_policy
from autoscaler.sources import PrometheusSource, read_metric, read_planner_signals
from autoscaler.target_shape import pending_replicas, resolve_gang
from autoscaler.targets import TargetError, Targets
from scheduler.placement.engine import CliqueEngine
from scheduler.placement.types import Gang, Role, Snapshot

log = logging.getLogger("clique.autoscaler")
STATUS_ANNOTATION = "clique.dev/autoscaling-status"
COMPONENT = "clique-autoscaler"


class PolicyContradictsTarget(ValueError):
    """A valid policy whose gang shape disagrees with what its target declares: reported like an invalid policy."""


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.current = Gauge("clique_autoscaler_current_replicas", "Replicas (gangs) of the target", ["policy"],
                             registry=r)
        self.desired = Gauge("clique_autoscaler_desired_replicas", "Replicas (gangs) decided", ["policy"], registry=r)
        self.blocked = Gauge("clique_autoscaler_blocked_by_capacity", "Replicas wanted but not placeable now",
                             ["policy"], registry=r)
        self.metrics_ok = Gauge("clique_autoscaler_metrics_available", "1 if every metric of the policy was read",
                                ["policy"], registry=r)
        self.scale_events = Counter("clique_autoscaler_scale_events", "Replica changes applied",
                                    ["policy", "direction"], registry=r)
        self.policy_errors = Gauge("clique_autoscaler_policy_invalid", "1 while the policy ConfigMap is invalid",
                                   ["policy"], registry=r)
        self.eval_seconds = Histogram("clique_autoscaler_evaluation_seconds", "Time to evaluate one policy",
                                      registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.leader = Gauge("clique_autoscaler_leader", "1 while this replica holds the lease", registry=r)


@dataclass
class PolicyRuntime:
    policy: Policy | None
    resource_version: str
    error: str | None = None
    text: str | None = None  # the policy YAML it was parsed from
    history: History = field(default_factory=History)
    next_due: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)  # last status written
    last_status_write: float = -1e9
    events_sent: dict[str, float] = field(default_factory=dict)
    feed: PlannerFeed | None = None  # policies with planner:, the planner and its memory


def next_due(due: float, now: float, interval_s: float) -> float:
    """When a policy evaluated at `now` (it was due at `due`) is due again: one interval after it was due, so that
    evaluations keep to the interval on average however late each tick finds them (one interval after `now` counted
    the tick's lateness and the evaluation's own time into every interval: 0.5 s evaluations ran every 0.6-0.9 s);
    one interval after `now` when it is a whole interval late (no burst of catch-up evaluations)."""
    return due + interval_s if now - due < interval_s else now + interval_s


class Autoscaler:
    def __init__(self, api: Any, prometheus_url: str | None, namespace: str | None = None,
                 state: Any = None, engine: CliqueEngine | None = None, clock: Callable[[], float] = time.monotonic,
                 dry_run: bool = False, wall_clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.prometheus = PrometheusSource(prometheus_url) if prometheus_url else None
        self.namespace = namespace
        self.state = state  # scheduler.extender.state.ClusterState for capacity; None disables the check
        self.engine = engine or CliqueEngine()
        self.clock = clock
        self.wall_clock = wall_clock  # the planner's time: its time-of-day profile needs the time of day
        self.dry_run = dry_run
        self.targets = Targets(api)
        self.runtimes: dict[str, PolicyRuntime] = {}
        self.metrics = Metrics()
        self._http = None

    # ------------------------------------------------------------------ policies
    async def load_policies(self) -> None:
        from kubernetes_asyncio import client

        core = client.CoreV1Api(self.api)
        kw = {"label_selector": f"{POLICY_LABEL}=true", "_preload_content": False}
        resp = await (core.list_namespaced_config_map(self.namespace, **kw) if self.namespace
                      else core.list_config_map_for_all_namespaces(**kw))
        items = json.loads(await resp.read()).get("items") or []
        seen = set()
        for cm in items:
            md = cm.get("metadata") or {}
            key = f"{md.get('namespace')}/{md.get('name')}"
            seen.add(key)
            rv = md.get("resourceVersion", "")
            rt = self.runtimes.get(key)
            text = (cm.get("data") or {}).get(POLICY_KEY)
            if rt is not None and (rt.resource_version == rv or rt.text == text):
                rt.resource_version = rv  # unchanged policy (our own status annotation bumps resourceVersion)
                continue
            try:
                if text is None:
                    raise PolicyError(f"ConfigMap {key}", [f"has no data key {POLICY_KEY!r}; put the policy YAML there"])
                policy = parse_policy(md.get("namespace"), md.get("name"), text)
                error = None
            except PolicyError as exc:
                policy, error = None, str(exc)
            except Exception as exc:  # a validation bug must not stop every other policy: report it as invalid
                log.exception("policy %s: validation failed", key)
                policy, error = None, f"ConfigMap {key}: could not be validated ({type(exc).__name__}: {exc})"
            new = PolicyRuntime(policy, rv, error, text)
            if rt is not None and rt.policy is not None and policy is not None and rt.policy.target == policy.target:
                new.history, new.next_due = rt.history, rt.next_due  # same target: keep its memory
                if (rt.feed is not None and policy.planner == rt.policy.planner
                        and policy.interval_s == rt.policy.interval_s
                        and (policy.min_replicas, policy.max_replicas) == (rt.policy.min_replicas,
                                                                           rt.policy.max_replicas)):
                    new.feed = rt.feed  # the same planner settings: keep its history too
            new.last, new.last_status_write = (rt.last, rt.last_status_write) if rt else ({}, -1e9)
            self.runtimes[key] = new
            self.metrics.policy_errors.labels(key).set(1 if error else 0)
            if error:
                log.error("invalid policy %s: %s", key, error)
                await self._event_on_configmap(cm, "InvalidPolicy", error, warning=True)
                await self._write_status(key, new, {"valid": False, "error": error})
            else:
                log.info("policy %s loaded: %s, %d..%d replicas, %s", key, policy.target.describe(),
                         policy.min_replicas, policy.max_replicas,
                         f"planner ({policy.planner.role})" if policy.planner else f"{len(policy.metrics)} metric(s)")
        for key in set(self.runtimes) - seen:
            log.info("policy %s removed", key)
            del self.runtimes[key]

    # ------------------------------------------------------------------ evaluation
    async def tick(self) -> list[tuple[str, Decision | None]]:
        """Re-list policies and evaluate the ones that are due. Returns what was decided (for tests and logs)."""
        await self.load_policies()
        now = self.clock()
        due = [(k, rt) for k, rt in sorted(self.runtimes.items()) if rt.policy is not None and rt.next_due <= now]
        results = await asyncio.gather(*(self._evaluate_safely(k, rt) for k, rt in due))
        return list(zip([k for k, _ in due], results))

    async def _evaluate_safely(self, key: str, rt: PolicyRuntime) -> Decision | None:
        assert rt.policy is not None
        rt.next_due = next_due(rt.next_due, self.clock(), rt.policy.interval_s)
        started = time.perf_counter()
        try:
            return await self.evaluate(key, rt)
        except PolicyContradictsTarget as exc:
            self.metrics.policy_errors.labels(key).set(1)
            log.error("invalid policy %s: %s", key, exc)
            if self.clock() - rt.events_sent.get("InvalidPolicy", -1e9) >= 300 or rt.last.get("error") != str(exc):
                rt.events_sent["InvalidPolicy"] = self.clock()
                ns, name = key.split("/", 1)
                await self._event(ns, {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": ns},
                                  "InvalidPolicy", str(exc), True)
            await self._write_status(key, rt, {"valid": False, "error": str(exc)})
        except TargetError as exc:
            log.error("policy %s: %s", key, exc)
            await self._write_status(key, rt, {"valid": True, "error": str(exc)})
        except Exception as exc:  # one policy's failure must never stop the others
            log.exception("policy %s: evaluation failed", key)
            await self._write_status(key, rt, {"valid": True, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.metrics.eval_seconds.observe(time.perf_counter() - started)
        return None

    async def evaluate(self, key: str, rt: PolicyRuntime) -> Decision:
        p = rt.policy
        assert p is not None
        scale = await self.targets.read(p.namespace, p.target)
        gang, problems = resolve_gang(p.gang, p.scale_unit, scale.shape, p.target.describe())
        if problems:
            raise PolicyContradictsTarget(f"ConfigMap {key} key {POLICY_KEY} contradicts its target: "
                                          + "; ".join(problems))
        self.metrics.policy_errors.labels(key).set(0)
        p = replace(p, gang=gang)  # the shape as the target declares it, where the policy left it out
        current = p.from_scale(scale.replicas)
        pods, unbound = await self.targets.pods(p.namespace, scale.selector)
        pending = pending_replicas(unbound, scale.selects, p.gang.pods)
        now = self.clock()
        if p.planner is not None:
            # the counters' samples since the last one used (their timestamps give the planner's 1 s bins)
            window = rt.feed.window_s(self.wall_clock()) if rt.feed is not None else FIRST_WINDOW_S
            signals = await read_planner_signals(p.planner, self.prometheus, window)
            capacity = self.capacity(p, pending) if p.capacity_aware else None
            if signals.error:
                decision = hold_decision(p, current, signals)
            else:  # the planner's own clock is the wall clock: its time-of-day profile needs the time of day
                if rt.feed is None:
                    rt.feed = PlannerFeed.for_policy(p)
                plan = rt.feed.plan(self.wall_clock(), signals, current)
                decision = (hold_decision(p, current, signals) if plan is None else
                            planned_decision(p, current, plan, signals, rt.feed.prompt_rate(), capacity))
        else:
            readings = await asyncio.gather(*(read_metric(m, self.prometheus, pods, self._session())
                                              for m in p.metrics))
            capacity = self.capacity(p, pending) if p.capacity_aware else None
            now = self.clock()
            decision = decide(p, current, list(readings), rt.history, now, capacity)
        dry = p.dry_run or self.dry_run
        applied = False
        if decision.changed and not dry:
            await self.targets.write(p.namespace, p.target, p.to_scale(decision.desired), scale)
            applied = True
            self.metrics.scale_events.labels(key, "up" if decision.desired > decision.current else "down").inc()
        record(rt.history, decision, now, applied)
        m = self.metrics
        m.current.labels(key).set(current)
        m.desired.labels(key).set(decision.desired)
        m.blocked.labels(key).set(decision.blocked_by_capacity)
        m.metrics_ok.labels(key).set(1 if all(o.replicas is not None for o in decision.metrics) else 0)
        log.info("policy %s: %s [%s]%s", key, decision.message, decision.reason.value, " (dry run)" if dry else "")
        await self._announce(p, rt, decision, dry)
        await self._write_status(key, rt, self._status(p, decision, dry, scale.via, rt))
        return decision

    def capacity(self, p: Policy, pending: int) -> Capacity | None:
        """How many more gangs of the policy's shape fit now (the engine's what-if on a live snapshot), beside the
        `pending` replicas of the target created but not bound yet."""
        if self.state is None or p.gang.gpus_per_pod <= 0:
            return None
        if not all(ev.is_set() for ev in self.state.synced.values()):
            return Capacity(0, 0, "cluster state not synced yet")
        g = p.gang
        if g.leader_gpus is not None and g.pods > 1:  # e.g. an LWS whose leaderTemplate asks for other GPUs
            roles = (Role("leader", 1, g.leader_gpus, g.cpu_millis_per_pod, g.memory_per_pod),
                     Role("worker", g.pods - 1, g.gpus_per_pod, g.cpu_millis_per_pod, g.memory_per_pod))
        else:
            roles = (Role("worker", g.pods, g.gpus_per_pod, g.cpu_millis_per_pod, g.memory_per_pod),)
        gang = Gang(f"{p.namespace}/{p.target.name}-whatif", roles,
                    required_level=g.topology_required, preferred_level=g.topology_preferred)
        snapshot = self.state.snapshot()
        if p.gang.node_selector:  # only the nodes the pods may land on
            sel = dict(p.gang.node_selector)
            hosts = {name: (h if all(self.state.nodes[name].labels.get(k) == v for k, v in sel.items())
                            else replace(h, schedulable=False)) for name, h in snapshot.hosts.items()}
            snapshot = Snapshot(snapshot.topology, hosts)
        fits = self.engine.what_if(snapshot, gang, limit=p.max_replicas + pending)
        reason = ""
        if fits < p.max_replicas + pending:
            plan = self.engine.place(snapshot, gang) if fits == 0 else None
            reason = plan.reason if plan is not None and plan.reason else f"room for {fits} more {gang.shape()} gang(s)"
        return Capacity(fits, pending, reason)

    # ------------------------------------------------------------------ reporting
    def _status(self, p: Policy, d: Decision, dry: bool, via: str = "", rt: PolicyRuntime | None = None
                ) -> dict[str, Any]:
        cond_ok = d.reason not in (Reason.NO_METRICS, Reason.METRICS_MISSING)
        extra: dict[str, Any] = {}
        if p.planner is not None:
            plan = rt.feed.last_plan if rt is not None and rt.feed is not None else None
            extra["planner"] = {"role": p.planner.role, **({} if plan is None or d.reason == Reason.NO_METRICS else {
                "prefill": plan.prefill, "decode": plan.decode, "reason": plan.reason,
                "forecastPromptTokensPerSecond": round(plan.forecast_prompt_tps, 3)})}
        return {**extra,
            "valid": True, "target": p.target.describe() + (f" via {via}" if via else ""),
            "gang": {"podsPerReplica": p.gang.pods, "gpusPerPod": p.gang.gpus_per_pod},
            "currentReplicas": d.current, "desiredReplicas": d.desired,
            "reason": d.reason.value, "message": d.message, "blockedByCapacity": d.blocked_by_capacity, "dryRun": dry,
            "metrics": [{"name": o.name, "value": o.current_value, "target": o.target, "error": o.error}
                        for o in d.metrics],
            "conditions": [{"type": "ScalingActive", "status": "True" if cond_ok else "False",
                            "reason": d.reason.value if not cond_ok else "ValidMetricFound"},
                           {"type": "AbleToScale", "status": "False" if d.blocked_by_capacity else "True",
                            "reason": "BlockedByCapacity" if d.blocked_by_capacity else "ReadyForNewScale"}],
        }

    async def _write_status(self, key: str, rt: PolicyRuntime, status: dict[str, Any]) -> None:
        from kubernetes_asyncio import client

        now = self.clock()
        if status == rt.last and now - rt.last_status_write < 60:
            return
        rt.last, rt.last_status_write = dict(status), now
        status = {**status, "lastEvaluation": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        ns, name = key.split("/", 1)
        try:
            await client.CoreV1Api(self.api).patch_namespaced_config_map(
                name, ns, {"metadata": {"annotations": {STATUS_ANNOTATION: json.dumps(status, sort_keys=True)}}})
        except Exception as exc:  # status is advice; the decision already happened
            log.warning("policy %s: could not write status (%s)", key, exc)

    async def _announce(self, p: Policy, rt: PolicyRuntime, d: Decision, dry: bool) -> None:
        """Events on the scale target: every change (ScaledUp / ScaledDown, or DryRun<reason>), and, at most every
        5 minutes each, BlockedByCapacity and metric holds (NoMetrics / MetricsMissing)."""
        target = {"apiVersion": p.target.api_version, "kind": p.target.kind, "name": p.target.name,
                  "namespace": p.namespace}
        events: list[tuple[str, bool]] = []  # (reason, warning)
        if d.changed:
            events.append((("DryRun" + d.reason.value) if dry else ("ScaledUp" if d.desired > d.current else
                                                                     "ScaledDown"), False))
        if d.blocked_by_capacity:
            events.append(("BlockedByCapacity", True))
        if d.reason in (Reason.NO_METRICS, Reason.METRICS_MISSING):
            events.append((d.reason.value, d.reason == Reason.NO_METRICS))
        now = self.clock()
        for reason, warning in events:
            repeatable = reason.startswith(("Scaled", "DryRun"))
            if not repeatable and now - rt.events_sent.get(reason, -1e9) < 300:
                continue
            rt.events_sent[reason] = now
            await self._event(p.namespace, target, reason, d.message, warning)

    async def _event_on_configmap(self, cm: dict, reason: str, message: str, warning: bool) -> None:
        md = cm.get("metadata") or {}
        await self._event(md.get("namespace"), {"apiVersion": "v1", "kind": "ConfigMap", "name": md.get("name"),
                                                "namespace": md.get("namespace"), "uid": md.get("uid")},
                          reason, message, warning)

    async def _event(self, ns: str, involved: dict, reason: str, message: str, warning: bool) -> None:
        from kubernetes_asyncio import client

        stamp = datetime.now(timezone.utc)
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{involved['name']}.clique-", "namespace": ns},
                "involvedObject": {k: v for k, v in involved.items() if v}, "reason": reason,
                "message": message[:1024], "type": "Warning" if warning else "Normal",
                "source": {"component": COMPONENT}, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
        try:
            await client.CoreV1Api(self.api).create_namespaced_event(ns, body)
        except Exception as exc:  # an Event is advice; never fail the decision for it
            log.warning("event %s on %s/%s not sent: %s", reason, ns, involved.get("name"), exc)

    def _session(self):
        import aiohttp

        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
