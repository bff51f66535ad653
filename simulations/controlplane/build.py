"""Builds the pinned control-plane binaries from their Go modules into a cache outside the repo.

Side effects: runs `go`, writes under the cache directory (default `~/.cache/clique`, or `$CLIQUE_CACHE`).

Why a wrapper module: `k8s.io/kubernetes` replaces its staging modules (`k8s.io/api`, `k8s.io/client-go`, ...)
with `./staging/...` paths, and `go install module@version` refuses any module with replace directives. A tiny
module of our own that requires the component and replaces each staging module with its published `v0.X.Y`
builds with plain `go build`. etcd's server module and kwok get the same wrapper (their go.mod files carry
replace directives too). Binaries of one bundle are built by one `go build`, so they share compiled packages.
Optional components (`OPTIONAL_COMPONENTS`, today only the LeaderWorkerSet manager `lws`) are built the same
way, but only when asked: `ensure_optional("lws")`, `clique build --with lws`, `ControlPlaneOptions(lws=True)`.
(`go install sigs.k8s.io/lws/cmd@v0.8.0` is refused; a wrapper that requires the module builds it.) A component's
`assets` (e.g. lws's CRD and webhook manifests) are copied from the module into its bundle after the build, so
the harness applies manifests of exactly the version it runs, without needing Go at run time.

Layout:   <cache>/bin/<bundle>/<binary>        e.g. ~/.cache/clique/bin/kubernetes-v1.37.2/kube-apiserver
          <cache>/bin/<bundle>/<asset dir>/    e.g. ~/.cache/clique/bin/lws-v0.8.0/config/crd/bases/
          <cache>/src/<bundle>/go.mod          the wrapper module (kept for inspection)
A bundle is complete when its `.complete` marker exists; builds take an exclusive file lock, so two
`make test` runs at once build once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from simulations.controlplane.versions import ALL_COMPONENTS, MIN_GO, OPTIONAL_COMPONENTS, Component


class BuildError(RuntimeError):
    """A component could not be built; the message says what to do."""


def cache_dir() -> Path:
    """Root of Clique's cache; `$CLIQUE_CACHE` overrides `~/.cache/clique` (XDG_CACHE_HOME honoured)."""
    if os.environ.get("CLIQUE_CACHE"):
        return Path(os.environ["CLIQUE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "clique"


@dataclass(frozen=True)
class Binaries:
    """Paths of the built control-plane binaries."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def binary_path(component: Component) -> Path:
    return cache_dir() / "bin" / component.bundle / component.name


def asset_path(component: Component, relative: str = "") -> Path:
    """Where a component's copied module files live, e.g. asset_path(LWS, "config/crd/bases")."""
    return cache_dir() / "bin" / component.bundle / relative


GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")  # where Go lands when it is not on PATH


def find_go(fallbacks: tuple[str, ...] = GO_FALLBACKS) -> tuple[str, tuple[int, int, int]]:
    """Locate the Go toolchain and parse its version, or raise a BuildError that says what to install."""
    go = shutil.which("go") or next((p for p in fallbacks if os.path.exists(p)), None)
    if not go:
        raise BuildError(
            "Go toolchain not found on PATH. Clique builds etcd, kube-apiserver, kube-controller-manager, "
            f"kube-scheduler and kwok from their Go modules and needs Go >= {MIN_GO[0]}.{MIN_GO[1]}: "
            "install it from https://go.dev/dl/ (or your distribution) and put `go` on PATH."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, env=_go_env())
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", out.stdout.strip())
    if out.returncode != 0 or not m:
        raise BuildError(f"`{go} env GOVERSION` failed ({out.stderr.strip() or out.stdout.strip()}); is the Go install broken?")
    version = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if version[:2] < MIN_GO:
        raise BuildError(
            f"{go} is Go {'.'.join(map(str, version))}; the pinned Kubernetes, etcd and kwok modules need Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]}. Install a newer Go from https://go.dev/dl/."
        )
    return go, version


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Build with the installed toolchain: a `toolchain` line must not trigger a download we cannot make.
    env["GOTOOLCHAIN"] = "local"
    env["GOFLAGS"] = "-mod=mod"
    env["CGO_ENABLED"] = "0"
    return env


def _proxy_get(path: str) -> str:
    """Read a file from the Go module proxy (GOPROXY's first entry) — used for a module's go.mod."""
    proxy = (os.environ.get("GOPROXY") or "https://proxy.golang.org").split(",")[0].split("|")[0]
    if proxy in ("direct", "off"):
        proxy = "https://proxy.golang.org"
    with urllib.request.urlopen(f"{proxy.rstrip('/')}/{path}", timeout=60) as resp:
        return resp.read().decode()


def _escape(module: str) -> str:
    # Module proxy protocol: upper-case letters are written as '!' + lower-case.
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), module)


def staging_replacements(kube_version: str, fetch: Callable[[str], str] = _proxy_get) -> list[str]:
    """Names of the k8s.io modules that k8s.io/kubernetes@version replaces with ./staging paths."""
    gomod = fetch(f"{_escape('k8s.io/kubernetes')}/@v/{kube_version}.mod")
    return sorted(set(re.findall(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s*=>\s*\./staging/", gomod, re.M)))


def wrapper_gomod(components: Iterable[Component], fetch: Callable[[str], str] = _proxy_get) -> str:
    """The go.mod text of the wrapper module for one bundle (pure but for reading the proxy)."""
    comps = list(components)
    lines = ["module clique.dev/controlplane-build", "", "go 1.26.0", ""]
    for module, version in sorted({(c.module, c.version) for c in comps}):
        lines.append(f"require {module} {version}")
    for module, version in sorted({(c.module, c.version) for c in comps}):
        if module == "k8s.io/kubernetes":
            staging_version = "v0." + version.removeprefix("v1.")
            for staged in staging_replacements(version, fetch):
                lines.append(f"replace {staged} => {staged} {staging_version}")
    return "\n".join(lines) + "\n"


def ldflags(component: Component) -> str:
    """Version stamps so `/version` (and `--version`) report the real release, not `v0.0.0-master`."""
    v = component.version
    if component.module == "k8s.io/kubernetes":
        major, minor = v.removeprefix("v").split(".")[:2]
        flags = []
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={v}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.gitCommit=module-{v}",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
        return " ".join(["-s", "-w", *flags])
    if component.name == "etcd":
        return f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-{v}"
    if component.name == "kwok":
        return f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={v.removeprefix('v')}"
    if component.name == "lws":  # printed by `lws --version` and logged at start
        pkg = "sigs.k8s.io/lws/pkg/version"
        return (f"-s -w -X {pkg}.GitVersion={v} -X {pkg}.GitCommit=module-{v} "
                f"-X {pkg}.BuildDate=1970-01-01T00:00:00Z")
    if component.name == "kueue":  # sigs.k8s.io/kueue@v0.17.0 pkg/version/version.go (Makefile LD_FLAGS)
        pkg = "sigs.k8s.io/kueue/pkg/version"
        return (f"-s -w -X {pkg}.GitVersion={v} -X {pkg}.GitCommit=module-{v} "
                f"-X {pkg}.BuildDate=1970-01-01T00:00:00Z")
    return "-s -w"


def ensure_binaries(log: Callable[[str], None] | None = None) -> Binaries:
    """Return the cached binaries, building any bundle that is missing (cold: ~15-25 min on 2 cores)."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bundles: dict[str, list[Component]] = {}
    for c in ALL_COMPONENTS:
        bundles.setdefault(c.bundle, []).append(c)
    for bundle, comps in bundles.items():
        _ensure_bundle(bundle, comps, say)
    by_name = {c.name: binary_path(c) for c in ALL_COMPONENTS}
    return Binaries(
        etcd=by_name["etcd"],
        kube_apiserver=by_name["kube-apiserver"],
        kube_controller_manager=by_name["kube-controller-manager"],
        kube_scheduler=by_name["kube-scheduler"],
        kwok=by_name["kwok"],
    )


def ensure_optional(name: str, log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build (once, cached) an optional component group such as "lws"; returns binary name -> path."""
    if name not in OPTIONAL_COMPONENTS:
        raise BuildError(f"unknown optional component {name!r}; choose from {', '.join(sorted(OPTIONAL_COMPONENTS))}")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    comps = OPTIONAL_COMPONENTS[name]
    bundles: dict[str, list[Component]] = {}
    for c in comps:
        bundles.setdefault(c.bundle, []).append(c)
    for bundle, members in bundles.items():
        _ensure_bundle(bundle, members, say)
    return {c.name: binary_path(c) for c in comps}


def _bundle_complete(bin_dir: Path, comps: list[Component]) -> bool:
    return ((bin_dir / ".complete").exists() and all((bin_dir / c.name).exists() for c in comps)
            and all((bin_dir / a).is_dir() for c in comps for a in c.assets))


def _copy_assets(go: str, src: Path, env: dict[str, str], comps: list[Component], staging: Path) -> None:
    """Copy each component's `assets` from the module version `go build` just used into the staging bundle."""
    for c in comps:
        if not c.assets:
            continue
        out = subprocess.run([go, "list", "-m", "-json", c.module], cwd=src, env=env, capture_output=True, text=True)
        try:
            module_dir = Path(json.loads(out.stdout)["Dir"])
        except (ValueError, KeyError) as exc:
            raise BuildError(f"`go list -m -json {c.module}` in {src} gave no module directory: "
                             f"{out.stderr.strip() or out.stdout.strip()}") from exc
        for rel in c.assets:
            if not (module_dir / rel).is_dir():
                raise BuildError(f"{c.module}@{c.version} has no {rel}/ (looked in {module_dir})")
            shutil.copytree(module_dir / rel, staging / rel)
            for path in (staging / rel).rglob("*"):  # the module cache is read-only; our copy need not be
                path.chmod(0o755 if path.is_dir() else 0o644)
            (staging / rel).chmod(0o755)


def _ensure_bundle(bundle: str, comps: list[Component], say: Callable[[str], None]) -> None:
    bin_dir = cache_dir() / "bin" / bundle
    if _bundle_complete(bin_dir, comps):
        return
    go, go_version = find_go()
    src = cache_dir() / "src" / bundle
    src.mkdir(parents=True, exist_ok=True)
    with open(src / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same bundle
        if _bundle_complete(bin_dir, comps):
            return
        say(f"[clique build] {bundle}: building {', '.join(c.name for c in comps)} with Go "
            f"{'.'.join(map(str, go_version))} (once; cached in {bin_dir})")
        started = time.monotonic()
        try:
            (src / "go.mod").write_text(wrapper_gomod(comps))
        except OSError as exc:
            raise BuildError(f"cannot read k8s.io/kubernetes's go.mod from the Go module proxy: {exc}. "
                             "Check network access to the Go module proxy (GOPROXY).") from exc
        (src / "go.sum").touch()
        staging = bin_dir.with_name(bundle + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        env = _go_env()
        # Each binary gets its own version stamp, but `go build` takes one -ldflags for all of it;
        # bundles share one set of stamps (same module version), so one invocation is enough.
        # One binary: name the output file (Go would call etcd's "server", dropping the /v3 suffix).
        # Several: `-o dir/` names each after its package directory (kube-apiserver, ...).
        out = str(staging / comps[0].name) if len(comps) == 1 else str(staging) + "/"
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags(comps[0]), "-o", out, *[c.package for c in comps]]
        _run_streaming(cmd, src, env, say, bundle)
        for c in comps:
            if not (staging / c.name).exists():
                raise BuildError(f"`go build` finished but {staging / c.name} is missing; see the output above.")
        _copy_assets(go, src, env, comps, staging)
        shutil.rmtree(bin_dir, ignore_errors=True)
        staging.rename(bin_dir)
        (bin_dir / ".complete").write_text(json.dumps({
            "components": [c.__dict__ for c in comps],
            "go": ".".join(map(str, go_version)),
            "seconds": round(time.monotonic() - started, 1),
        }, indent=1))
        say(f"[clique build] {bundle}: done in {time.monotonic() - started:.0f}s")


def _run_streaming(cmd: list[str], cwd: Path, env: dict[str, str], say: Callable[[str], None], bundle: str) -> None:
    """Run `go build`, passing through its (sparse) output and a heartbeat so long builds show progress."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    started = time.monotonic()
    last_beat = started
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        line = proc.stdout.readline()
        if line:
            tail = (tail + [line.rstrip()])[-40:]
            if not line.startswith("go: downloading"):
                say(f"[clique build] {bundle}: {line.rstrip()}")
            continue
        if proc.poll() is not None:
            rest = proc.stdout.read() or ""
            tail = (tail + rest.splitlines())[-40:]
            break
        if time.monotonic() - last_beat > 30:
            last_beat = time.monotonic()
            say(f"[clique build] {bundle}: still compiling ({last_beat - started:.0f}s)")
        time.sleep(0.2)
    if proc.returncode != 0:
        raise BuildError(
            f"building {bundle} failed (exit {proc.returncode}) in {cwd}:\n" + "\n".join(tail)
            + "\nThe wrapper module is kept there; rerun `go build` in it to investigate."
        )
