"""A real Prometheus server for tests and benchmarks, from Debian's `prometheus` package.
Side effects: may download and unpack the .deb into the cache; starts and stops the server process.

Where it comes from, first found wins:
    $CLIQUE_PROMETHEUS                          an explicit binary
    `prometheus` on PATH                        e.g. `apt-get install prometheus`
    <cache>/debs/prometheus/usr/bin/prometheus  `apt-get download prometheus` + `dpkg-deb -x`, no root needed
The unpacked package is a static Go binary, so nothing is installed system-wide and no service is started.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import json
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable

import yaml

from simulations.controlplane.build import cache_dir
from simulations.controlplane.processes import ControlPlaneError, Proc, free_port, http_ok, start, stop, wait_until


def ensure_prometheus(say=print) -> Path:
    """The path of a Prometheus binary, fetching Debian's package into the cache when needed."""
    explicit = os.environ.get("CLIQUE_PROMETHEUS")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ControlPlaneError(f"$CLIQUE_PROMETHEUS={explicit} is not an executable file")
        return Path(explicit)
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    root = cache_dir() / "debs" / "prometheus"
    binary = root / "usr" / "bin" / "prometheus"
    if binary.exists():
        return binary
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".prometheus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
            raise ControlPlaneError("Prometheus not found and this is not a Debian system: install Prometheus and "
                                    "put it on PATH, or set $CLIQUE_PROMETHEUS")
        say("fetching Debian's prometheus package (apt-get download) into " + str(root.parent))
        with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
            got = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("prometheus_*.deb"))
            if got.returncode != 0 or not debs:
                raise ControlPlaneError("`apt-get download prometheus` failed (run `apt-get update` first, or install "
                                        f"Prometheus yourself):\n{got.stderr.strip()[-1500:]}")
            unpack = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpack)], check=True)
            if root.exists():
                shutil.rmtree(root)
            unpack.rename(root)
    return binary


class Prometheus:
    """One Prometheus on 127.0.0.1 scraping the given targets. Context manager; stop() and start() again keep
    the same port and data, so a test can take Prometheus away and bring it back."""

    def __init__(self, targets: Iterable[str], workdir: Path | None = None, scrape_interval: str = "1s") -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="clique-prometheus-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.proc: Proc | None = None
        self.binary = ensure_prometheus()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{"job_name": "clique-test", "static_configs": [{"targets": self.targets}]}],
        }))
        return path

    def start(self) -> "Prometheus":
        if self.proc is not None and self.proc.alive():
            return self
        argv = [str(self.binary), f"--config.file={self._config()}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}", "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle"]
        self.proc = start("prometheus", argv, self.workdir / "logs", detached=False)
        wait_until(self.proc, lambda: http_ok(f"{self.url}/-/ready"), "Prometheus ready", 60)
        return self

    def wait_for_series(self, promql: str, timeout_s: float = 20) -> None:
        """Block until `promql` returns a result (the first scrapes landed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}",
                                            timeout=2) as resp:
                    if json.loads(resp.read())["data"]["result"]:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"Prometheus has no result for {promql} after {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
