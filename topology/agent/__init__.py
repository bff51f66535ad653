"""The node agent: NVML discovery of a host's GPUs and interconnect, published to its Node; GPU memory as
DCGM-named metrics. NVML sits behind a small backend interface (real: pynvml; fake: tests without a GPU)."""
