"""The kube-scheduler extender: wire format, cluster state, gang planning and all-or-nothing binding."""
