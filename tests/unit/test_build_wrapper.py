"""The wrapper module and version stamps the harness builds with (pure parts of build.py)."""

import pytest

from simulations.controlplane import build
from simulations.controlplane.versions import ETCD, KUBE_COMPONENTS, KWOK

KUBE_GOMOD = """module k8s.io/kubernetes

go 1.26.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-scheduler => ./staging/src/k8s.io/kube-scheduler
)
"""


def test_wrapper_replaces_every_staging_module_with_its_published_version():
    gomod = build.wrapper_gomod(KUBE_COMPONENTS, fetch=lambda path: KUBE_GOMOD)
    assert "require k8s.io/kubernetes v1.37.2" in gomod
    for staged in ("k8s.io/api", "k8s.io/client-go", "k8s.io/kube-scheduler"):
        assert f"replace {staged} => {staged} v0.37.2" in gomod
    assert gomod.count("require ") == 1


def test_etcd_wrapper_needs_no_staging_replacements():
    gomod = build.wrapper_gomod([ETCD], fetch=lambda path: pytest.fail("etcd needs no proxy lookup"))
    assert "require go.etcd.io/etcd/server/v3 v3.6.16" in gomod and "replace" not in gomod


def test_version_stamps_make_version_report_the_real_release():
    flags = build.ldflags(KUBE_COMPONENTS[0])
    assert "-X k8s.io/component-base/version.gitVersion=v1.37.2" in flags
    assert "-X k8s.io/component-base/version.gitMinor=37" in flags
    assert "sigs.k8s.io/kwok/pkg/consts.Version=0.8.0" in build.ldflags(KWOK)


def test_missing_go_toolchain_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(build.BuildError, match=r"Go toolchain not found.*install it"):
        build.find_go(fallbacks=())


def test_cache_dir_is_outside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIQUE_CACHE", str(tmp_path / "c"))
    assert build.cache_dir() == tmp_path / "c"
    assert build.binary_path(ETCD) == tmp_path / "c" / "bin" / "etcd-v3.6.16" / "etcd"


def test_lws_is_optional_and_its_wrapper_requires_the_module_and_copies_its_manifests():
    from simulations.controlplane.versions import ALL_COMPONENTS, LWS, OPTIONAL_COMPONENTS

    assert LWS not in ALL_COMPONENTS and OPTIONAL_COMPONENTS["lws"] == (LWS,)  # `clique build` alone skips it
    gomod = build.wrapper_gomod([LWS], fetch=lambda path: pytest.fail("lws needs no proxy lookup"))
    assert "require sigs.k8s.io/lws v0.8.0" in gomod and "replace" not in gomod
    assert LWS.package == "sigs.k8s.io/lws/cmd" and "config/crd/bases" in LWS.assets
    assert "-X sigs.k8s.io/lws/pkg/version.GitVersion=v0.8.0" in build.ldflags(LWS)
    with pytest.raises(build.BuildError, match="unknown optional component"):
        build.ensure_optional("nope")
