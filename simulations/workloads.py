"""Clusters and workloads for the simulators, from the real public traces in simulations/data or generated.
Pure (files in, data out).

Data (copied unchanged into simulations/data, see its README.md; keep the attribution wherever results are
published):
    Alibaba cluster-trace-gpu-v2023 "openb" (CC BY 4.0), Weng et al., "Beware of Fragmentation: Scheduling
      GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC 2023: node list and pod lists.
    Azure LLM inference trace 2023, code (CC BY 4.0), Patel et al., "Splitwise", ISCA 2024.
    Mooncake traces (JSONL: timestamp in ms, input_length, output_length), when the user has them.

openb GPUs are whole GPUs here: a pod asking for a fraction of one (gpu_milli < 1000) gets one whole GPU, as
`nvidia.com/gpu: 1` without sharing would; `gpu_spec` (GPU model restrictions) is ignored. Both are stated
in every report that uses the trace.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scheduler.placement.types import Gang, HostState, Role, Snapshot
from topology.levels import levels_from_labels
from topology.model import HostInfo, Topology

DATA = Path(__file__).resolve().parent / "data"  # travels with the package (see data/README.md)
OPENB = DATA / "alibaba-openb-2023"
AZURE_CODE = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv"
AZURE_CONV = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MiB = 2**20
ATTRIBUTION = {
    "openb": "Alibaba cluster-trace-gpu-v2023 (openb), CC BY 4.0; Weng et al., USENIX ATC 2023",
    "azure": "Azure LLM inference trace 2023, CC BY 4.0; Patel et al., Splitwise, ISCA 2024",
}
SHORT_NAMES = {"openb-nodes": OPENB / "openb_node_list_gpu_node.csv",
               "openb-default": OPENB / "openb_pod_list_default.csv",
               "openb-multigpu50": OPENB / "openb_pod_list_multigpu50.csv",
               "azure-code": AZURE_CODE,
               "azure-conv": AZURE_CONV}
OPENB_NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
OPENB_POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu")


def data_file(name: str | Path) -> Path:
    """A trace file by short name (SHORT_NAMES) or path, with a clear error when it is not there."""
    path = SHORT_NAMES.get(str(name), Path(name).expanduser())
    if not path.is_file():
        raise FileNotFoundError(f"trace file {path} not found; pass a path to a file, or one of the bundled traces "
                                f"({', '.join(SHORT_NAMES)}, in {DATA})")
    return path


def source_label(name: str | Path) -> str:
    """What to call a trace in output file names and titles: the short name, or a path's file stem (a path
    pasted into a file name would name folders that do not exist)."""
    return str(name) if str(name) in SHORT_NAMES else Path(name).stem


def _require_columns(path: Path, fieldnames, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in (fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: not an {what} (missing columns {', '.join(missing)}; needs {','.join(needed)})")


@dataclass(frozen=True)
class Arrival:
    time: float  # seconds from the start
    gang: Gang
    duration: float | None  # None: never leaves


@dataclass(frozen=True)
class Overlay:
    """Generated topology for a cluster whose trace has none: hosts (sorted by GPU model and size, so a domain is
    homogeneous) fill NVLink domains, leaves and spine blocks in order."""

    hosts_per_nvlink: int = 1  # 1: each 8-GPU host is its own NVLink island (HGX)
    hosts_per_leaf: int = 8
    leaves_per_spine: int = 4


def openb_cluster(path: Path | None = None, overlay: Overlay = Overlay()) -> Snapshot:
    """The openb node list (or `path`, another node list with its columns) as a snapshot, with the overlay's
    labels (levels spine > leaf > nvlink)."""
    path = path or data_file("openb-nodes")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require_columns(path, reader.fieldnames, OPENB_NODE_COLUMNS, "openb-format node list")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no nodes")
    rows.sort(key=lambda r: (r["model"], -int(r["gpu"]), r["sn"]))
    hosts, states = [], {}
    labels_of = [("clique.dev/spine", overlay.hosts_per_leaf * overlay.leaves_per_spine),
                 ("clique.dev/leaf", overlay.hosts_per_leaf)]
    if overlay.hosts_per_nvlink > 1:
        labels_of.append(("nvidia.com/gpu.clique", overlay.hosts_per_nvlink))
    for i, r in enumerate(rows):
        labels = {key: f"{key.rsplit('/', 1)[1].split('.')[-1]}-{i // size}" for key, size in labels_of}
        labels["nvidia.com/gpu.product"] = r["model"]
        hosts.append(HostInfo(r["sn"], int(r["gpu"]), labels))
        states[r["sn"]] = HostState(r["sn"], gpus=int(r["gpu"]), cpu_millis=int(r["cpu_milli"]),
                                    memory=int(r["memory_mib"]) * MiB)
    names = ["spine", "leaf"] + (["nvlink"] if overlay.hosts_per_nvlink > 1 else [])
    levels = levels_from_labels([k for k, _ in labels_of], names)
    return Snapshot(Topology(hosts, levels), states)


def openb_pods(path: Path, limit: int | None = None) -> tuple[list[Arrival], bool]:
    """openb pods as single-pod gangs. Returns (arrivals, timed): timed when the file has creation/deletion
    times (arrivals and departures); otherwise file order at time = index (fill until failure)."""
    out = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        _require_columns(path, reader.fieldnames, OPENB_POD_COLUMNS, "openb-format pod list")
        timed = "creation_time" in (reader.fieldnames or [])
        for i, r in enumerate(reader):
            if limit is not None and i >= limit:
                break
            gpus = int(r["num_gpu"])  # a fractional pod has num_gpu 1 (gpu_milli < 1000): one whole GPU here
            gang = Gang(r["name"], (Role("pod", 1, gpus, int(r["cpu_milli"]), int(r["memory_mib"]) * MiB),))
            if timed:
                start = float(r["creation_time"])
                end = float(r["deletion_time"]) if r.get("deletion_time") else None
                out.append(Arrival(start, gang, (end - start) if end is not None else None))
            else:
                out.append(Arrival(float(i), gang, None))
    out.sort(key=lambda a: a.time)
    return out, timed


def dynamo_mix(count: int, seed: int, rate_per_s: float = 0.05, mean_duration_s: float = 3600) -> list[Arrival]:
    """Synthetic Dynamo serving mix: aggregated TP16 / TP32 replicas (a leader and workers, 8 GPUs each),
    disaggregated prefill + decode pairs (a 1x8 prefill gang and a 2x8 decode gang), single-GPU pods.
    Multi-node replicas require one NVLink domain when the cluster has one level labelled nvlink; otherwise
    they prefer one leaf. Poisson arrivals, exponential lifetimes."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(count):
        t += rng.expovariate(rate_per_s)
        life = rng.expovariate(1 / mean_duration_s)
        kind = rng.choices(["tp16", "tp32", "disagg", "single"], weights=[3, 2, 2, 3])[0]
        if kind == "tp16":
            g = [Gang(f"tp16-{i}", (Role("leader", 1, 8, one_per_host=True), Role("worker", 1, 8)),
                      preferred_level="leaf")]
        elif kind == "tp32":
            g = [Gang(f"tp32-{i}", (Role("leader", 1, 8, one_per_host=True), Role("worker", 3, 8)),
                      preferred_level="leaf")]
        elif kind == "disagg":
            g = [Gang(f"prefill-{i}", (Role("worker", 1, 8),)),
                 Gang(f"decode-{i}", (Role("leader", 1, 8, one_per_host=True), Role("worker", 1, 8)),
                      preferred_level="leaf")]
        else:
            g = [Gang(f"single-{i}", (Role("pod", 1, rng.choice([1, 1, 2, 4])),))]
        out.extend(Arrival(t, x, life) for x in g)
    return out


@dataclass(frozen=True)
class Request:
    time: float  # seconds from the start of the trace
    prompt: int  # tokens
    output: int  # tokens


def load_requests(path: Path, limit: int | None = None) -> list[Request]:
    """Azure LLM CSV (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake JSONL (timestamp ms, input_length,
    output_length), as requests relative to the first one."""
    out: list[Request] = []
    if path.suffix in (".jsonl", ".json"):
        for line in open(path):
            if line.strip():
                d = json.loads(line)
                out.append(Request(float(d["timestamp"]) / 1000.0, int(d["input_length"]), int(d["output_length"])))
    else:
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                ts = r["TIMESTAMP"]
                head, _, frac = ts.partition(".")
                t = datetime.strptime(head, "%Y-%m-%d %H:%M:%S").timestamp() + float("0." + (frac or "0"))
                out.append(Request(t, int(r["ContextTokens"]), int(r["GeneratedTokens"])))
    if not out:
        raise ValueError(f"{path}: no requests")
    out.sort(key=lambda r: r.time)
    t0 = out[0].time
    out = [Request(r.time - t0, r.prompt, max(1, r.output)) for r in out]
    return out[:limit] if limit else out
