"""Scheduler: placement engine (pure), gang recognition, extender HTTP service, cluster-state watches, binder."""
