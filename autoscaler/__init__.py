"""Autoscaler: ConfigMap policies, metric sources, the HPA-v2 algorithm (pure) and the /scale reconciler."""
