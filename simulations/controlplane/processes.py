"""Child processes of the harness: start with logs, wait for readiness, stop without leftovers.

Side effects: starts and signals OS processes, binds test sockets to find free ports.

Two lifetimes:
- attached (context manager, pytest fixture): children get PR_SET_PDEATHSIG=SIGTERM, so even a killed test
  run takes its control plane down with it;
- detached (`clique cluster up`): children start in their own session and outlive the CLI; `clique cluster
  down` stops them by the PIDs recorded in the state file, checking each PID's command line first so a
  reused PID is never signalled. Nothing is ever killed by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """A component failed to start or answer; the message carries the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Proc:
    """A started component."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None  # None when re-attached from a state file
    pid: int = 0

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_matches(self.pid, self.argv[0])

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start(name: str, argv: list[str], log_dir: Path, detached: bool, env: dict[str, str] | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as fh:
        popen = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=detached, preexec_fn=None if detached else _set_pdeathsig,
        )
    return Proc(name=name, argv=argv, log=log, popen=popen, pid=popen.pid)


def pid_matches(pid: int, executable: str) -> bool:
    """True if `pid` is alive and still runs `executable` (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: already exited, awaiting its parent
            return False
    except (OSError, IndexError):
        return False
    return cmdline == executable


def stop(proc: Proc, grace_s: float = 10.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL. Safe to call twice."""
    if not proc.alive():
        if proc.popen is not None:
            proc.popen.wait()
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.popen is not None:
            try:
                proc.popen.wait(timeout=0.1)
                return
            except subprocess.TimeoutExpired:
                continue
        if not proc.alive():
            return
        time.sleep(0.1)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc.popen is not None:
        proc.popen.wait(timeout=10)
    else:
        end = time.monotonic() + 10
        while proc.alive() and time.monotonic() < end:
            time.sleep(0.05)


def wait_until(proc: Proc, probe: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll `probe` until it is true; fail fast, with the log tail, if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ControlPlaneError(f"{proc.name} exited before {what}; last lines of {proc.log}:\n{proc.log_tail()}")
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - any probe failure means "not yet"
            pass
        time.sleep(0.1)
    raise ControlPlaneError(f"{proc.name}: {what} not reached within {timeout_s:.0f}s; last lines of {proc.log}:\n"
                            f"{proc.log_tail()}")


def http_ok(url: str, token: str | None = None, ca_file: str | None = None, insecure: bool = False) -> bool:
    """GET url and report whether it answered 200."""
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=ca_file)
        if insecure:  # components' own self-signed health endpoints on loopback
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_service(args: list[str], log: Path, port: int, what: str, ready_timeout_s: float = 60.0,
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m clique ARGS` (one of our own services) and wait until http://127.0.0.1:PORT/readyz
    answers; on failure the process is killed and the error names the log. `env`: extra variables."""
    import sys

    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "clique", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    deadline = time.monotonic() + ready_timeout_s
    while not http_ok(f"http://127.0.0.1:{port}/readyz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the {what} did not become ready; see {log}")
        time.sleep(0.1)
    return proc


def stop_service(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`. Safe to call twice."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or raise TimeoutError naming `what` and
    the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {last!r})")
