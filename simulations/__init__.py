"""Simulations: the local control-plane harness (real etcd/kube-apiserver/... built from Go modules, KWOK
nodes), and later the offline placement simulator, autoscaler trace replay and benchmarks."""
