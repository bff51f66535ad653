"""A tiny reader of our own kustomizations: `resources` (files and directories) and `namespace` only.

There is no kubectl here; Clique's manifests use nothing else, and anything else fails loudly rather than
being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def build(directory: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kust) - SUPPORTED
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unsupported)}, which this reader does not support")
    out: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = directory / res
        if path.is_dir():
            out += build(path)
        else:
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if kust.get("namespace"):
        for obj in out:
            if obj["kind"] not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != "kube-system":
                obj["metadata"]["namespace"] = kust["namespace"]
    return out
