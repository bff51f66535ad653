"""Cluster state of the extender: nodes and pods from list+watch (kubernetes_asyncio). Side effects: API reads.

List, then watch from the list's resourceVersion with bookmarks. A watch that ends (the server's timeout, a
dropped connection, an API server restart) resumes from the last resourceVersion seen, events and bookmarks
alike, as client-go's reflector does (k8s.io/client-go v0.37.2 tools/cache/reflector.go); only a 410 Gone
(that version is no longer served: etcd compacted past it, or a restarted API server's watch cache starts
after it) relists, and a relist replaces every node or pod, so nothing is lost or counted twice. Errors back
off exponentially up to 30 s. `lists`, `expired` and `watches` count lists, 410s and watch streams per kind (read by /debug/usage). Nothing is trusted from memory alone: a restarted extender
rebuilds everything from the API. `snapshot()` turns the state plus in-flight reservations into the
placement engine's pure Snapshot; the Topology is rebuilt only when the node set or its labels change.

The victim index (gang preemption's candidates) is kept the same way, per event: every bound, not terminating
pod as a VictimPod under its unit (its gang, or itself when it has none), each unit's frozen VictimUnit rebuilt
only when one of its pods changes, so `victim_units()` costs one pass over units, not a scan of every pod.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

import numpy as np

from scheduler.extender.nodefit import HARD_EFFECTS
from scheduler.extender.pinning import has_gate
from scheduler.extender.slim import Slimmer, fresh, slim_node
from scheduler.gangs import pod_request
from scheduler.gangs import recognize as recognize_gang
from scheduler.placement.preemption import VictimPod, VictimUnit
from scheduler.placement.types import HostState, Snapshot
from topology.levels import Level
from topology.model import HostInfo, Topology
from topology.quantity import QuantityError, as_int, cpu_millis

log = logging.getLogger("clique.extender.state")
TERMINAL = ("Succeeded", "Failed")
NVLINK = "clique.dev/nvlink-matrix"
LIST_PAGE = 500  # objects per list page


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    gpus: int
    cpu_millis: int
    memory: int
    pods: int
    schedulable: bool  # Ready and not cordoned (taints are judged per pod: most tolerate GPU nodes' taints)
    taints: tuple[dict, ...] = ()  # NoSchedule / NoExecute taints
    ready: bool = True  # its Ready condition is True (read by the gang health loop)
    ready_changed: str | None = None  # that condition's lastTransitionTime (RFC 3339), as the API server has it


def node_info(node: Mapping[str, Any]) -> NodeInfo:
    md, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    alloc = status.get("allocatable") or {}
    try:
        gpus, cpu, mem, pods = (as_int(alloc.get("nvidia.com/gpu", 0)), cpu_millis(alloc.get("cpu", 0)),
                                as_int(alloc.get("memory", 0)), as_int(alloc.get("pods", 110)))
    except QuantityError as exc:  # one odd node must not stop the others: treat it as unusable
        log.warning("node %s: unreadable allocatable (%s); treating it as full", md.get("name"), exc)
        gpus, cpu, mem, pods = 0, 0, 0, 0
    ready_cond = next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), {})
    ready = ready_cond.get("status") == "True"
    taints = tuple(t for t in spec.get("taints") or [] if isinstance(t, dict) and t.get("effect") in HARD_EFFECTS)
    # The node lifecycle controller's taints (not-ready, unreachable, unschedulable, pressure) mean the node is out
    # for every pod we place; other taints (e.g. nvidia.com/gpu:NoSchedule) are for the pods' tolerations.
    lifecycle = any(str(t.get("key", "")).startswith("node.kubernetes.io/") for t in taints)
    # fresh copies (slim.fresh): a parsed string kept here would pin the memory of the whole list it came in
    return NodeInfo(fresh(md.get("name", "")), fresh(dict(md.get("labels") or {})),
                    fresh(dict(md.get("annotations") or {})), gpus, cpu, mem, pods,
                    ready and not spec.get("unschedulable") and not lifecycle, tuple(fresh(list(taints))), ready,
                    fresh(ready_cond.get("lastTransitionTime")))


class ClusterState:
    """Nodes and non-terminal pods, kept current by watches. Reads are synchronous dict lookups."""

    def __init__(self, levels: tuple[Level, ...], recognize: Callable[[dict], Any] = recognize_gang) -> None:
        self.levels = levels
        self.recognize = recognize
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, dict[str, Any]] = {}  # "ns/name" -> slim pod (slim.py: the fields read; read-only)
        self._slim = Slimmer()
        self.synced = {"nodes": asyncio.Event(), "pods": asyncio.Event()}
        self.lists = {"nodes": 0, "pods": 0}  # full lists done (the first one and every relist)
        self.expired = {"nodes": 0, "pods": 0}  # 410 Gone answers that made a watch relist
        self.watches = {"nodes": 0, "pods": 0}  # watch streams opened (the first, and every resume or relist)
        # Kept up to date on every event, so planning never scans all pods:
        self.usage: dict[str, list[int]] = {}  # node -> [gpus, cpu_millis, memory, pods] of bound pods
        # pod key -> its node and request, as a VictimPod: the same object the victim index holds for a live pod
        # (one 56-byte object a bound pod, not that and a (node, request) tuple as well)
        self._contrib: dict[str, VictimPod] = {}
        # gang key -> pod keys: a 1-tuple while the gang has one pod (most pods are gangs of one: 48 bytes, not a
        # 216-byte set), a set from two; a gang with no pod left has no entry
        self.gang_index: dict[str, tuple[str] | set[str]] = {}
        self._requests: dict[tuple[int, int, int, int], tuple[int, int, int, int]] = {}  # one object per request
        self._gang_of: dict[str, str] = {}  # pod key -> gang key
        self.touched_gangs: set[str] = set()  # gangs whose pods changed since the gang recovery last looked
        self.gated_gangs: set[str] = set()  # gangs with a pod under our scheduling gate that changed (pinning.py)
        self.taint_version = 0  # bumped when a node's taints or schedulability change (cached node refusals)
        self.on_pod_gone: Callable[[dict], None] | None = None  # told of a known pod deleted or terminal (gang health)
        self.node_version = 0  # bumped when the node set, labels, GPUs or NVLink annotation change
        self.version = 0  # bumped on any change that alters a snapshot
        self._topology: Topology | None = None
        self._topology_version = -1
        self._base: dict[str, HostState] | None = None  # host states of the last snapshot, updated in place
        self._base_free: dict[str, tuple[int, int, int, int]] = {}
        self._base_untouched: dict[str, bool] = {}
        self._dirty: set[str] | None = None  # nodes changed since; None = rebuild all
        self._free_matrix = np.zeros((0, 4), dtype=np.int64)  # free resources in topology row order
        self._untouched_vec = np.zeros(0, dtype=bool)
        self._rows_version = -1  # node_version the arrays' row order belongs to
        # The last snapshot's view with reservations applied (hosts, free vectors, free matrix, the reserved
        # amounts it applied): the next one recomputes only hosts whose reservation or base changed since.
        self._view: tuple[dict[str, HostState], dict[str, tuple[int, int, int, int]], np.ndarray,
                          dict[str, tuple[int, int, int, int]]] | None = None
        # victim index (gang preemption): unit id -> {pod key: (priority, VictimPod)} of bound, live pods
        # (a unit of one pod, not a gang: that pod's (priority, VictimPod) itself)
        self._victims: dict[str, dict[str, tuple[int, VictimPod]] | tuple[int, VictimPod]] = {}
        self._victim_unit_of: dict[str, str] = {}  # pod key -> its gang's unit id (a one-pod unit: no entry)
        self._victim_cache: dict[str, VictimUnit] = {}  # unit id -> its VictimUnit (dropped when it changes)
        self._victim_order: list[str] | None = None  # unit ids sorted (None: rebuild)
        self._bound_priorities: dict[int, int] = {}  # priority -> bound live pods with it

    # ------------------------------------------------------------------ watches
    async def run(self, api_client: Any) -> None:
        from kubernetes_asyncio import client

        core = client.CoreV1Api(api_client)
        await asyncio.gather(
            self._list_watch("nodes", core.list_node, self._set_nodes, self._node_event, api_client),
            self._list_watch("pods", core.list_pod_for_all_namespaces, lambda items: self._set_pods(items, slimmed=True),
                             self._pod_event, api_client),
        )

    async def _list_watch(self, kind: str, list_fn: Callable[..., Awaitable[Any]], replace: Callable[[list], None],
                          apply: Callable[[str, dict], None], api_client: Any) -> None:
        from kubernetes_asyncio import watch
        from kubernetes_asyncio.client.exceptions import ApiException

        class RawWatch(watch.Watch):
            """Events as plain dicts: the client would otherwise re-serialise and deserialise every object
            into model classes we never use (the extender's main CPU cost under load)."""

            def get_return_type(self, func):  # noqa: ANN001
                return None

        backoff = 1.0
        rv: str | None = None  # where the watch resumes; None: list first
        while True:
            try:
                if rv is None:
                    rv, items = await self._list_pages(kind, list_fn)
                    replace(items)
                    self.lists[kind] += 1
                    self.synced[kind].set()
                    log.info("listed %d %s at resourceVersion %s", len(items), kind, rv)
                    del items
                w = RawWatch()
                self.watches[kind] += 1
                async with w:
                    async for ev in w.stream(list_fn, resource_version=rv, allow_watch_bookmarks=True,
                                             timeout_seconds=240, _request_timeout=300):
                        rv = w.resource_version or rv  # events and bookmarks both move the resume point
                        backoff = 1.0
                        if ev["type"] != "BOOKMARK":
                            apply(ev["type"], ev["raw_object"])
                # the server ended the watch (its timeout): resume from rv
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                # kubernetes_asyncio raises a watch's ERROR event as ApiException with the event's code
                if exc.status == 410:
                    self.expired[kind] += 1
                    log.info("%s watch from resourceVersion %s expired (410 Gone); relisting", kind, rv)
                    rv = None
                    continue
                log.warning("%s list/watch failed (%s %s); retrying in %.0fs", kind, exc.status, exc.reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)
            except Exception as exc:  # noqa: BLE001 - keep watching whatever happened
                log.warning("%s list/watch failed (%s); retrying in %.0fs", kind, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def _list_pages(self, kind: str, list_fn: Callable[..., Awaitable[Any]]) -> tuple[str, list[dict]]:
        """A consistent list in pages of LIST_PAGE (client-go's pager default, k8s.io/client-go v0.37.2
        tools/pager/pager.go defaultPageSize, which its reflector uses), each page reduced to what the state reads
        (slim.py) before the next is read: one 50,000-pod list as served would be 1.4 GB of Python objects at
        once, and the memory it leaves behind is never returned. An expired continue token is a 410 (relist).
        Returns the list's resourceVersion and the items."""
        slim = self._slim.pod if kind == "pods" else slim_node
        items: list[dict] = []
        token = None
        while True:
            resp = await list_fn(limit=LIST_PAGE, _preload_content=False, **({"_continue": token} if token else {}))
            page = json.loads(await resp.read())
            del resp  # the response caches its body
            items.extend(slim(o) for o in page.get("items") or [])
            meta = page["metadata"]  # ListMeta: resourceVersion, continue (k8s.io/apimachinery v0.37.2 meta/v1/types.go)
            token = meta.get("continue")
            if not token:
                return meta["resourceVersion"], items

    def _set_nodes(self, items: list[dict]) -> None:
        self.nodes = {n.name: n for n in map(node_info, items)}
        self.node_version += 1
        self.taint_version += 1
        self.version += 1
        self._dirty = None

    def _touch(self, node: str | None) -> None:
        if node and self._dirty is not None:
            self._dirty.add(node)

    def _node_event(self, typ: str, obj: dict) -> None:
        info = node_info(obj)
        old = self.nodes.get(info.name)
        if typ == "DELETED":
            self.nodes.pop(info.name, None)
        else:
            self.nodes[info.name] = info
        if typ == "DELETED" or old is None or (old.labels, old.gpus, old.annotations.get(NVLINK)) != (
                info.labels, info.gpus, info.annotations.get(NVLINK)):
            self.node_version += 1
            self._dirty = None  # node set changed: rebuild every host state
        else:
            self._touch(info.name)
        if old is None or typ == "DELETED" or (old.taints, old.schedulable) != (info.taints, info.schedulable):
            self.taint_version += 1
        self.version += 1

    def _set_pods(self, items: list[dict], slimmed: bool = False) -> None:
        """Every pod anew; `slimmed`: the items are slim pods already (_list_pages made them), kept as they are
        (slimming them again would copy every pod once more, and the copies' holes would stay in the heap)."""
        self.pods, self.usage, self._contrib, self.gang_index, self._gang_of = {}, {}, {}, {}, {}
        self._victims, self._victim_unit_of, self._victim_cache = {}, {}, {}
        self._victim_order, self._bound_priorities = None, {}
        self._dirty = None
        for p in items:
            self._pod_event("ADDED", p, slimmed)

    def _pod_event(self, typ: str, obj: dict, slimmed: bool = False) -> None:
        md = obj.get("metadata") or {}
        key = f"{md.get('namespace')}/{md.get('name')}"
        gone = typ == "DELETED" or (obj.get("status") or {}).get("phase") in TERMINAL
        # usage: take the old contribution out, put the new one in
        old = self._contrib.pop(key, None)
        if old is not None:
            self._touch(old.host)
            acc = self.usage[old.host]
            for i, v in enumerate(old.request):
                acc[i] -= v
        node = (obj.get("spec") or {}).get("nodeName")
        ref = None if gone else self.recognize(obj)
        self._unindex_victim(key)
        if not gone and node:
            r = pod_request(obj)
            req = (r.gpus, r.cpu_millis, r.memory, 1)
            if len(self._requests) < 4096:  # pods of one template ask the same: one tuple for all of them
                req = self._requests.setdefault(req, req)
            else:
                req = self._requests.get(req, req)
            vp = VictimPod(key, node, req)
            if not md.get("deletionTimestamp"):
                self._index_victim(key, obj, vp, ref)
            self._contrib[key] = vp
            self._touch(node)
            acc = self.usage.setdefault(node, [0, 0, 0, 0])
            for i, v in enumerate(req):
                acc[i] += v
        # gang index
        old_gang = self._gang_of.pop(key, None)
        if old_gang is not None:
            members = self.gang_index.get(old_gang)
            if isinstance(members, set):
                members.discard(key)
                if not members:
                    del self.gang_index[old_gang]
            elif members == (key,):
                del self.gang_index[old_gang]
            self.touched_gangs.add(old_gang)
        if gone:
            if self.pods.pop(key, None) is not None and self.on_pod_gone is not None:
                self.on_pod_gone(obj)
        else:
            self.pods[key] = obj if slimmed else self._slim.pod(obj, self.pods.get(key))
            gang = ref.key  # recognised once above
            self._gang_of[key] = gang
            members = self.gang_index.get(gang)
            if members is None:
                self.gang_index[gang] = (key,)
            elif isinstance(members, set):
                members.add(key)
            elif key not in members:
                self.gang_index[gang] = {*members, key}
            self.touched_gangs.add(gang)
            if has_gate(obj):
                self.gated_gangs.add(gang)
        self.version += 1

    # ------------------------------------------------------------------ victim index
    def _index_victim(self, key: str, obj: dict, vp: VictimPod, ref: Any) -> None:
        prio = (obj.get("spec") or {}).get("priority")
        prio = prio if isinstance(prio, int) else 0  # the Priority admission plugin's default without a class
        single = getattr(ref, "source", "single") == "single"
        unit = key if single else ref.key
        entry = (prio, vp)
        if single:  # a unit of one pod (most of them) keeps its entry itself under the pod's key, not a dict of one
            if unit not in self._victims:
                self._victim_order = None
            self._victims[unit] = entry
        else:  # a gang's unit id is its gang key ("ns/source/name"), never a pod key ("ns/name")
            pods = self._victims.get(unit)
            if not isinstance(pods, dict):
                pods = self._victims[unit] = {}
                self._victim_order = None
            pods[key] = entry
            self._victim_unit_of[key] = unit
        self._victim_cache.pop(unit, None)
        self._bound_priorities[prio] = self._bound_priorities.get(prio, 0) + 1

    def _unindex_victim(self, key: str) -> None:
        unit = self._victim_unit_of.pop(key, None)
        if unit is None:
            if not isinstance(self._victims.get(key), tuple):
                return  # not in the index
            unit = key  # a unit of one pod
        pods = self._victims[unit]
        if isinstance(pods, dict):
            prio, _ = pods.pop(key)
        else:
            prio, pods = pods[0], None
        left = self._bound_priorities[prio] - 1
        if left:
            self._bound_priorities[prio] = left
        else:
            del self._bound_priorities[prio]
        self._victim_cache.pop(unit, None)
        if not pods:
            del self._victims[unit]
            self._victim_order = None

    def _victim_unit(self, unit: str) -> VictimUnit:
        pods = self._victims[unit]
        if isinstance(pods, dict):
            return VictimUnit(unit, max(p for p, _ in pods.values()), tuple(vp for _, (_, vp) in sorted(pods.items())),
                              True)
        return VictimUnit(unit, pods[0], (pods[1],), False)

    def lowest_bound_priority(self) -> int | None:
        """The lowest priority of any bound, not terminating pod (None: none), without a scan."""
        return min(self._bound_priorities) if self._bound_priorities else None

    def victim_units(self, below: int, exclude: str | None = None) -> list[VictimUnit]:
        """Every unit of bound, not terminating pods whose priority (its highest pod's) is below `below`, in unit id
        order, except the unit `exclude` (the preemptor's own gang). The VictimUnits are frozen: safe to hand to
        a worker thread while events keep changing the index."""
        if self._victim_order is None:
            self._victim_order = sorted(self._victims)
        out = []
        cache = self._victim_cache
        for unit in self._victim_order:
            u = cache.get(unit)
            if u is None:
                u = cache[unit] = self._victim_unit(unit)
            if u.priority < below and unit != exclude:
                out.append(u)
        return out

    def victim_unit(self, unit: str) -> VictimUnit | None:
        """One unit as the index has it now (None: no bound live pod left), for checking a decision made on an
        earlier copy."""
        if unit not in self._victims:
            return None
        return self._victim_cache.get(unit) or self._victim_unit(unit)

    # ------------------------------------------------------------------ views
    def topology(self) -> Topology:
        """Rebuilt only when the node set or what the model reads of nodes changed (Kueue's habit)."""
        if self._topology_version != self.node_version:
            self._topology = Topology([HostInfo(n.name, n.gpus, n.labels, n.annotations) for n in self.nodes.values()],
                                      self.levels)
            self._topology_version = self.node_version
            for problem in self._topology.problems:
                log.warning("topology: %s", problem)
        assert self._topology is not None
        return self._topology

    def _host_state(self, n: NodeInfo) -> HostState:
        u = self.usage.get(n.name, (0, 0, 0, 0))
        return HostState(n.name, gpus=n.gpus, cpu_millis=n.cpu_millis, memory=n.memory, pods=n.pods,
                         gpus_used=u[0], cpu_used=u[1], memory_used=u[2], pods_used=u[3], schedulable=n.schedulable)

    def snapshot(self, reserved: Mapping[str, tuple[int, int, int, int]] | None = None) -> Snapshot:
        """Hosts with what bound pods use, plus `reserved` (host -> gpus, cpu, memory, pods) of gangs in flight.

        Host states are kept between calls and only the nodes touched by events since are rebuilt, so a
        snapshot costs O(changes), not O(nodes); the engine's free vectors are carried over the same way.
        """
        topo = self.topology()
        rebuild = self._base is None or self._dirty is None or self._rows_version != self.node_version
        changed: set[str] = set() if rebuild else set(self._dirty or ())
        if rebuild:
            self._base = {n.name: self._host_state(n) for n in self.nodes.values()}
            self._base_free = {name: h.free for name, h in self._base.items()}
            self._base_untouched = {name: h.gpus_used == 0 and h.pods_used == 0 for name, h in self._base.items()}
            zero = (0, 0, 0, 0)
            self._free_matrix = np.array([self._base_free.get(h, zero) for h in topo.host_names],
                                         dtype=np.int64).reshape(len(topo.host_names), 4)
            self._untouched_vec = np.array([self._base_untouched.get(h, False) for h in topo.host_names], dtype=bool)
            self._rows_version = self.node_version
        else:
            for name in self._dirty:
                n = self.nodes.get(name)
                if n is not None:
                    self._base[name] = h = self._host_state(n)
                    self._base_free[name] = h.free
                    self._base_untouched[name] = h.gpus_used == 0 and h.pods_used == 0
                    row = topo.host_row.get(name)
                    if row is not None:
                        self._free_matrix[row] = h.free
                        self._untouched_vec[row] = self._base_untouched[name]
        self._dirty = set()
        reserved = dict(reserved or {})
        view = None if rebuild else self._view
        if view is None:  # from the base: every reserved host
            hosts, free, matrix = dict(self._base), dict(self._base_free), self._free_matrix.copy()
            redo: Iterable[str] = reserved
        else:  # from the last view: hosts whose base changed, or whose reservation did (gangs in flight pile up
            hosts, free, matrix, applied = view  # while kube-scheduler binds: redoing every one was O(them) a plan)
            redo = changed | {h for h in applied.keys() | reserved.keys() if applied.get(h) != reserved.get(h)}
        base = self._base
        for name in redo:
            h = base.get(name)
            if h is None:
                hosts.pop(name, None)
                free.pop(name, None)
                continue
            res = reserved.get(name)
            if res is not None:
                h = HostState(h.name, h.gpus, h.cpu_millis, h.memory, h.pods, h.gpus_used + res[0],
                              h.cpu_used + res[1], h.memory_used + res[2], h.pods_used + res[3], h.schedulable)
            hosts[name] = h
            free[name] = f = h.free
            row = topo.host_row.get(name)
            if row is not None:
                matrix[row] = f
        self._view = (hosts, free, matrix, reserved)
        hosts, free, matrix = dict(hosts), dict(free), matrix.copy()  # the snapshot's own: the view moves on
        snap = Snapshot(topo, hosts)
        # Precomputed (Snapshot's cached properties), copies so later updates do not reach this snapshot.
        # Reservations do not change what counts as untouched, which is about what is bound.
        snap.__dict__["free_vectors"] = free
        snap.__dict__["free_matrix"] = matrix
        snap.__dict__["untouched"] = dict(self._base_untouched)
        snap.__dict__["untouched_vector"] = self._untouched_vec.copy()
        return snap

    def forget(self, key: str, uid: str) -> None:
        """A pod this process deleted: drop it now, before the watch says so (only that pod, by UID, never a
        successor created under the same name), so no plan counts its place or sees it as a bound member."""
        pod = self.pods.get(key)
        if pod is not None and (pod.get("metadata") or {}).get("uid") == uid:
            self._pod_event("DELETED", pod)

    def take_gated(self) -> set[str]:
        gated, self.gated_gangs = self.gated_gangs, set()
        return gated

    def take_touched_gangs(self) -> set[str]:
        touched, self.touched_gangs = self.touched_gangs, set()
        return touched

    def gang_members(self, gang_key: str) -> list[dict]:
        """Pods of one gang, bound or not (from the index kept on pod events)."""
        return [self.pods[k] for k in sorted(self.gang_index.get(gang_key, ()))]
