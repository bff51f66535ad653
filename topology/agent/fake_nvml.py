"""FAKE NVML, for tests and demos on machines without a GPU (the hardware boundary). Pure.

Host profiles as NVML would describe them:
    nvswitch-8            8 x H100 80GB behind NVSwitch: NVLink between every pair
    nvl72-4:<uuid>:<id>   4 x GB200 of an NVL72 rack: NVLink between every pair, fabric cluster UUID + clique id
    pcie-4                4 x L40S on PCIe: no NVLink; peer reads over PCIe between GPUs 0-1 and 2-3 only
`fail={gpu: "what"}` makes every query about that GPU fail, to test that the others are still reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from topology.agent.nvml_backend import NvmlError, NvmlUnavailable

GiB = 2**30


@dataclass
class FakeNvml:
    product: str
    count: int
    total_bytes: int
    nvlink_all: bool
    pcie_pairs: set[tuple[int, int]] = field(default_factory=set)
    fabric_info: tuple[str, int] | None = None
    used_bytes: dict[int, int] = field(default_factory=dict)
    fail: dict[int, str] = field(default_factory=dict)
    available: bool = True

    def _check(self, i: int) -> None:
        if i in self.fail:
            raise NvmlError(f"GPU {i}: {self.fail[i]}")

    def init(self) -> None:
        if not self.available:
            raise NvmlUnavailable("NVML could not be initialised (fake: no driver): no NVIDIA driver or no GPU")

    def shutdown(self) -> None:
        pass

    def driver_version(self) -> str:
        return "fake-580.00"

    def device_count(self) -> int:
        return self.count

    def name(self, i: int) -> str:
        self._check(i)
        return self.product

    def uuid(self, i: int) -> str:
        self._check(i)
        return f"GPU-fake0000-0000-0000-0000-{i:012d}"

    def memory(self, i: int) -> tuple[int, int, int, int]:
        self._check(i)
        reserved = 512 * 2**20
        used = self.used_bytes.get(i, 0)
        return self.total_bytes, reserved, used, self.total_bytes - reserved - used

    def p2p(self, i: int, j: int, kind: str) -> bool:
        self._check(i)
        self._check(j)
        if kind == "nvlink":
            return self.nvlink_all
        return (min(i, j), max(i, j)) in self.pcie_pairs

    def fabric(self, i: int) -> tuple[str, int] | None:
        self._check(i)
        return self.fabric_info

    def pci_bus_id(self, i: int) -> str:
        self._check(i)
        return f"00000000:{0x18 + 0x10 * i:02X}:00.0"

    def numa_node(self, i: int) -> int | None:
        self._check(i)
        return 0 if i < self.count // 2 else 1


def fake_profile(spec: str) -> FakeNvml:
    """A fake host from a profile name (see the module docstring)."""
    kind, *rest = spec.split(":")
    if kind == "nvswitch-8":
        return FakeNvml("NVIDIA H100 80GB HBM3", 8, 80 * GiB, nvlink_all=True)
    if kind == "nvl72-4":
        cluster = rest[0] if rest else "8f0b0a1c-1111-2222-3333-444455556666"
        clique = int(rest[1]) if len(rest) > 1 else 1
        return FakeNvml("NVIDIA GB200", 4, 186 * GiB, nvlink_all=True, fabric_info=(cluster, clique))
    if kind == "pcie-4":
        return FakeNvml("NVIDIA L40S", 4, 48 * GiB, nvlink_all=False, pcie_pairs={(0, 1), (2, 3)})
    if kind == "none":
        return FakeNvml("none", 0, 0, nvlink_all=False, available=False)
    raise ValueError(f"unknown fake NVML profile {spec!r}; use nvswitch-8, nvl72-4[:uuid:clique], pcie-4 or none")
