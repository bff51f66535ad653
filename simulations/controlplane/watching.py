"""One list + watch loop for the harness's observers (the scenario's pod watch, Kueue's Workload watch), run in a
thread until told to stop. Side effects: API reads only.

The watch is read as raw JSON lines (no model objects: a fill of thousands of pods would spend its time in the
client library); it resumes from the last resourceVersion seen and relists only when the server says the version
expired (410 Gone), as client-go's reflector does (k8s.io/client-go v0.37.2 tools/cache/reflector.go).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("clique.harness.watch")


def list_and_watch(list_once: Callable[[], dict], watch_from: Callable[[str], Any], apply: Callable[[str, dict], None],
                   stop: threading.Event, errors: list[str], what: str) -> None:
    """`list_once()`: the list as a JSON dict (items, metadata.resourceVersion); `watch_from(rv)`: an unread
    watch response (`_preload_content=False`, a short `timeout_seconds` so `stop` is seen); `apply(type, obj)`
    for every listed object (as ADDED) and every watch event but bookmarks. A broken watch is retried after
    0.5 s and its error kept in `errors`."""
    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                listed = list_once()
                for obj in listed.get("items") or []:
                    apply("ADDED", obj)
                rv = listed["metadata"]["resourceVersion"]
            resp = watch_from(rv)
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        rv = None if obj.get("code") == 410 else rv  # expired: relist
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if ev.get("type") != "BOOKMARK":
                        apply(ev["type"], obj)
                if stop.is_set():
                    break
            resp.release_conn()
        except Exception as exc:  # noqa: BLE001 - a broken watch is retried; the error is kept for the report
            errors.append(str(exc)[:300])
            log.warning("%s watch failed (%s); retrying", what, exc)
            rv = None
            time.sleep(0.5)


class WatchThread:
    """A background observer: `_run` (the subclass's list_and_watch over its resource) in a daemon thread, with
    the stop event and the error list that list_and_watch takes. `start()` returns the observer."""

    def __init__(self, name: str) -> None:
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):  # noqa: ANN201 - the subclass itself, for `obs = Observer(...).start()`
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=70)  # a watch's timeout_seconds is 5: it sees the stop within that
