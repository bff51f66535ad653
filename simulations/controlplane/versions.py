"""Pinned versions of the control-plane components the harness builds (no side effects).

Change a version here and the next build lands in a new cache directory; old ones stay until removed.
"""

from __future__ import annotations

from dataclasses import dataclass

KUBERNETES_VERSION = "v1.37.2"
"""k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler (the newest Go 1.26 builds)."""

ETCD_VERSION = "v3.6.16"
"""go.etcd.io/etcd/server/v3 (Debian's etcd 3.4 is too old for Kubernetes >= 1.35)."""

KWOK_VERSION = "v0.8.0"
"""sigs.k8s.io/kwok/cmd/kwok."""

LWS_VERSION = "v0.8.0"
"""sigs.k8s.io/lws (LeaderWorkerSet controller manager, `sigs.k8s.io/lws/cmd`); optional: built only when asked."""

KUEUE_VERSION = "v0.17.0"
"""sigs.k8s.io/kueue (the Kueue manager, `sigs.k8s.io/kueue/cmd/kueue`); optional: built only when asked."""

MIN_GO = (1, 26)
"""The Kubernetes, etcd and kwok modules declare `go 1.26.0` (lws v0.8.0 declares `go 1.25.0`)."""


@dataclass(frozen=True)
class Component:
    """One Go binary the harness builds: which module, which package, which version."""

    name: str  # binary name, e.g. "kube-apiserver"
    module: str  # Go module path that is required by the wrapper module
    package: str  # main package to build
    version: str  # module version (a tag)
    bundle: str  # cache sub-directory shared by binaries built in one `go build`
    assets: tuple[str, ...] = ()  # directories of the module copied into <bundle>/<dir> (manifests the harness applies)


KUBE_COMPONENTS = tuple(
    Component(name, "k8s.io/kubernetes", f"k8s.io/kubernetes/cmd/{name}", KUBERNETES_VERSION, f"kubernetes-{KUBERNETES_VERSION}")
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
)
ETCD = Component("etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", ETCD_VERSION, f"etcd-{ETCD_VERSION}")
KWOK = Component("kwok", "sigs.k8s.io/kwok", "sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION, f"kwok-{KWOK_VERSION}")
ALL_COMPONENTS = (*KUBE_COMPONENTS, ETCD, KWOK)

LWS = Component("lws", "sigs.k8s.io/lws", "sigs.k8s.io/lws/cmd", LWS_VERSION, f"lws-{LWS_VERSION}",
                assets=("config/crd/bases", "config/webhook"))
# Kueue's manifests live under config/components/ in the module (sigs.k8s.io/kueue@v0.17.0).
KUEUE = Component("kueue", "sigs.k8s.io/kueue", "sigs.k8s.io/kueue/cmd/kueue", KUEUE_VERSION, f"kueue-{KUEUE_VERSION}",
                  assets=("config/components/crd", "config/components/webhook"))
OPTIONAL_COMPONENTS: dict[str, tuple[Component, ...]] = {"lws": (LWS,), "kueue": (KUEUE,)}
"""Built only on request (`clique build --with lws`, `ControlPlaneOptions(lws=True)`), never by default."""
