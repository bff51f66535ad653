"""What the agent reads from NVML about one host, and what it publishes to the Node. Pure (given a backend).

`read_host` never lets one GPU's error hide the others: each failed query is recorded and that GPU reported
with what could be read. `node_patch` turns a reading into a JSON merge patch of only the labels and
annotations whose values change (None when nothing does), leaving GPU Feature Discovery's labels to GFD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from topology.agent.nvml_backend import NvmlBackend, NvmlError
from topology.nvlink import NVLINK_MATRIX_ANNOTATION, encode_links
from topology.spec import GPU_COUNT_LABEL, GPU_PRODUCT_LABEL

CLIQUE_LABEL = "nvidia.com/gpu.clique"
GFD_MARKER = "nvidia.com/gfd.timestamp"  # GPU Feature Discovery labels its nodes with this
GPUS_ANNOTATION = "clique.dev/gpus"


@dataclass
class GpuReading:
    index: int
    uuid: str = ""
    name: str = ""
    total: int = 0  # bytes
    reserved: int = 0
    used: int = 0
    free: int = 0
    pci_bus_id: str = ""
    numa_node: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def memory_ok(self) -> bool:
        return self.total > 0


@dataclass
class HostReading:
    gpus: list[GpuReading]
    nvlink: set[tuple[int, int]]
    pcie_p2p: set[tuple[int, int]]
    fabric: tuple[str, int] | None  # (cluster UUID, clique id) of the host's NVLink domain
    driver: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def product(self) -> str:
        return next((g.name for g in self.gpus if g.name), "")

    @property
    def clique(self) -> str | None:
        """The NVLink domain as GFD writes it: "<cluster UUID>.<clique id>"."""
        return f"{self.fabric[0]}.{self.fabric[1]}" if self.fabric else None

    def matrix(self) -> str:
        return encode_links(len(self.gpus), self.nvlink, self.pcie_p2p)


def read_host(nvml: NvmlBackend) -> HostReading:
    count = nvml.device_count()
    gpus = []
    for i in range(count):
        g = GpuReading(i)
        for attr, fn in (("uuid", nvml.uuid), ("name", nvml.name), ("pci_bus_id", nvml.pci_bus_id),
                         ("numa_node", nvml.numa_node)):
            try:
                setattr(g, attr, fn(i))
            except NvmlError as exc:
                g.errors.append(f"{attr}: {exc}")
        try:
            g.total, g.reserved, g.used, g.free = nvml.memory(i)
        except NvmlError as exc:
            g.errors.append(f"memory: {exc}")
        gpus.append(g)
    nvlink, pcie, errors = set(), set(), []
    for a in range(count):
        for b in range(a + 1, count):
            try:
                if nvml.p2p(a, b, "nvlink"):
                    nvlink.add((a, b))
                elif nvml.p2p(a, b, "read"):
                    pcie.add((a, b))
            except NvmlError as exc:
                errors.append(f"p2p {a}-{b}: {exc}")
    fabric = None
    for g in gpus:  # every GPU of a host shares its NVLink domain; the first that answers tells it
        try:
            fabric = nvml.fabric(g.index)
            break
        except NvmlError as exc:
            errors.append(f"fabric GPU {g.index}: {exc}")
    try:
        driver = nvml.driver_version()
    except NvmlError:
        driver = ""
    return HostReading(gpus, nvlink, pcie, fabric, driver, errors)


def node_patch(reading: HostReading, labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict | None:
    """The merge patch that brings the Node up to date, or None. GFD-owned labels are only written where GFD
    is absent; a clique label GFD already set is never overwritten."""
    want_labels: dict[str, str] = {}
    gfd = GFD_MARKER in labels
    if reading.clique and not (gfd and CLIQUE_LABEL in labels):
        want_labels[CLIQUE_LABEL] = reading.clique
    if not gfd:
        want_labels[GPU_COUNT_LABEL] = str(len(reading.gpus))
        if reading.product:
            want_labels[GPU_PRODUCT_LABEL] = reading.product.replace(" ", "-")
    want_ann = {
        NVLINK_MATRIX_ANNOTATION: reading.matrix(),
        GPUS_ANNOTATION: json.dumps([{"index": g.index, "uuid": g.uuid, "pci": g.pci_bus_id, "numa": g.numa_node}
                                     for g in reading.gpus], separators=(",", ":")),
    }
    changed_labels = {k: v for k, v in want_labels.items() if labels.get(k) != v}
    changed_ann = {k: v for k, v in want_ann.items() if annotations.get(k) != v}
    if not changed_labels and not changed_ann:
        return None
    md: dict = {}
    if changed_labels:
        md["labels"] = changed_labels
    if changed_ann:
        md["annotations"] = changed_ann
    return {"metadata": md}
