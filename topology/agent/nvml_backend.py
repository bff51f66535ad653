"""NVML behind a small interface: the real one (nvidia-ml-py's `pynvml`). Side effects: talks to the GPU driver.

Every call can raise NvmlError; `init()` raises NvmlUnavailable when there is no driver or no GPU, with a
message that says so plainly.
"""

from __future__ import annotations

import ctypes
from typing import Protocol


class NvmlError(RuntimeError):
    """An NVML call failed (for one GPU or one query)."""


class NvmlUnavailable(NvmlError):
    """NVML cannot be used at all: no NVIDIA driver, no libnvidia-ml, or no GPU."""


class NvmlBackend(Protocol):
    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def name(self, i: int) -> str: ...
    def uuid(self, i: int) -> str: ...
    def memory(self, i: int) -> tuple[int, int, int, int]: ...  # total, reserved, used, free (bytes)
    def p2p(self, i: int, j: int, kind: str) -> bool: ...  # kind: "nvlink" or "read" (PCIe peer reads)
    def fabric(self, i: int) -> tuple[str, int] | None: ...  # (cluster UUID, clique id) once fabric is up
    def pci_bus_id(self, i: int) -> str: ...
    def numa_node(self, i: int) -> int | None: ...


class RealNvml:
    """pynvml, the module of the `nvidia-ml-py` distribution."""

    def __init__(self) -> None:
        import pynvml

        self.n = pynvml
        self._handles: dict[int, object] = {}

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self.n.NVMLError as exc:
            raise NvmlError(f"{fn.__name__}: {exc}") from None

    def init(self) -> None:
        try:
            self.n.nvmlInit()
        except self.n.NVMLError as exc:
            raise NvmlUnavailable(f"NVML could not be initialised ({exc}): no NVIDIA driver or no GPU on this "
                                  "host. Run the agent on GPU nodes only (see the DaemonSet's nodeSelector), or "
                                  "pass --allow-no-gpu to serve empty metrics.") from None
        if self.device_count() == 0:
            raise NvmlUnavailable("NVML reports no GPU on this host")

    def shutdown(self) -> None:
        try:
            self.n.nvmlShutdown()
        except self.n.NVMLError:
            pass

    def _h(self, i: int):
        if i not in self._handles:
            self._handles[i] = self._call(self.n.nvmlDeviceGetHandleByIndex, i)
        return self._handles[i]

    def driver_version(self) -> str:
        v = self._call(self.n.nvmlSystemGetDriverVersion)
        return v.decode() if isinstance(v, bytes) else str(v)

    def device_count(self) -> int:
        return int(self._call(self.n.nvmlDeviceGetCount))

    def name(self, i: int) -> str:
        v = self._call(self.n.nvmlDeviceGetName, self._h(i))
        return v.decode() if isinstance(v, bytes) else str(v)

    def uuid(self, i: int) -> str:
        v = self._call(self.n.nvmlDeviceGetUUID, self._h(i))
        return v.decode() if isinstance(v, bytes) else str(v)

    def memory(self, i: int) -> tuple[int, int, int, int]:
        m = self._call(self.n.nvmlDeviceGetMemoryInfo, self._h(i), self.n.nvmlMemory_v2)
        return int(m.total), int(m.reserved), int(m.used), int(m.free)

    def p2p(self, i: int, j: int, kind: str) -> bool:
        index = {"nvlink": self.n.NVML_P2P_CAPS_INDEX_NVLINK, "read": self.n.NVML_P2P_CAPS_INDEX_READ}[kind]
        return self._call(self.n.nvmlDeviceGetP2PStatus, self._h(i), self._h(j), index) == self.n.NVML_P2P_STATUS_OK

    def fabric(self, i: int) -> tuple[str, int] | None:
        info = self.n.c_nvmlGpuFabricInfoV_t()
        info.version = self.n.nvmlGpuFabricInfo_v2
        try:
            self.n.nvmlDeviceGetGpuFabricInfoV(self._h(i), ctypes.byref(info))
        except self.n.NVMLError_NotSupported:
            return None  # not a fabric-attached (NVL72-style) GPU
        except self.n.NVMLError as exc:
            raise NvmlError(f"nvmlDeviceGetGpuFabricInfoV: {exc}") from None
        if info.state != self.n.NVML_GPU_FABRIC_STATE_COMPLETED:
            return None
        raw = bytes(info.clusterUuid)
        uuid = "-".join(raw.hex()[a:b] for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)))
        return uuid, int(info.cliqueId)

    def pci_bus_id(self, i: int) -> str:
        v = self._call(self.n.nvmlDeviceGetPciInfo_v3, self._h(i)).busId
        return v.decode() if isinstance(v, bytes) else str(v)

    def numa_node(self, i: int) -> int | None:
        try:
            v = self.n.nvmlDeviceGetNumaNodeId(self._h(i))
        except self.n.NVMLError:
            return None
        return int(v) if v >= 0 else None
