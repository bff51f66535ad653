"""Per-GPU memory as dcgm-exporter names it, so the autoscaler's DCGM path reads the agent unchanged. Pure
(a prometheus_client collector over the last reading).

    DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_FB_FREE / DCGM_FI_DEV_FB_RESERVED   whole MiB, like dcgm-exporter
    labels: gpu, UUID, device, modelName, Hostname, pci_bus_id             as dcgm-exporter sets them

Names and help texts: NVIDIA/dcgm-exporter 4.5.3-4.8.2 etc/default-counters.csv; labels: its
internal/pkg/rendermetrics/render_metrics.go (an unreleased commit after it renames Hostname to hostname); the
values are NVML's bytes // 2**20, as NVIDIA/DCGM v4.5.3 dcgmlib/src/DcgmCacheManager.cpp computes them.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from topology.agent.reading import HostReading

MiB = 2**20
LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id"]


class AgentCollector:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.reading: HostReading | None = None
        self.errors_total = 0
        self.nvml_available = True

    def collect(self):
        fields = {
            "DCGM_FI_DEV_FB_USED": ("Framebuffer memory used (in MiB).", lambda g: g.used),
            "DCGM_FI_DEV_FB_FREE": ("Framebuffer memory free (in MiB).", lambda g: g.free),
            "DCGM_FI_DEV_FB_RESERVED": ("Framebuffer memory reserved (in MiB).", lambda g: g.reserved),
        }
        for name, (doc, get) in fields.items():
            fam = GaugeMetricFamily(name, doc, labels=LABELS)
            for g in (self.reading.gpus if self.reading else []):
                if g.memory_ok:  # a GPU whose memory could not be read has no sample (not a false zero)
                    fam.add_metric([str(g.index), g.uuid, f"nvidia{g.index}", g.name, self.hostname, g.pci_bus_id],
                                   get(g) // MiB)
            yield fam
        up = GaugeMetricFamily("clique_agent_nvml_up", "1 if NVML answered at the last reading")
        up.add_metric([], 1.0 if self.nvml_available and self.reading is not None else 0.0)
        yield up
        errs = CounterMetricFamily("clique_agent_nvml_errors", "NVML queries that failed", labels=[])
        errs.add_metric([], self.errors_total)
        yield errs
