"""Topology: the cluster model (hosts, GPUs, NVLink / network domains). Pure: no Kubernetes access."""
