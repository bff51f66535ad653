"""Clique: topology-aware gang scheduling and autoscaling for multi-node GPU LLM inference on Kubernetes."""

__version__ = "0.1.0"
