"""A small synthetic exporter for tests and benchmarks: serves, on 127.0.0.1, metrics shaped like the ones the
autoscaler reads in production, with values the caller sets. Side effects: one HTTP server thread.

    dynamo_frontend_queued_requests / vllm:num_requests_waiting    Dynamo / vLLM queue depth (gauges)
    vllm:kv_cache_usage_perc                                        KV-cache usage, 0..1 (gauge)
    DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_FB_FREE                       framebuffer MiB per GPU, labelled like
                                                                    dcgm-exporter with Kubernetes pod mapping
It stands in for the serving framework and dcgm-exporter (there is no GPU or model here); Prometheus, the
autoscaler and the control plane around it are the real ones.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Labels = tuple[tuple[str, str], ...]


class SyntheticExporter:
    def __init__(self, port: int = 0) -> None:
        self._values: dict[tuple[str, Labels], float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="synthetic-exporter", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = float(value)

    def remove(self, name: str, **labels: str) -> None:
        with self._lock:
            self._values.pop((name, tuple(sorted(labels.items()))), None)

    def queue(self, depth: float, **labels: str) -> None:
        self.set("dynamo_frontend_queued_requests", depth, **labels)
        self.set("vllm:num_requests_waiting", depth, **labels)

    def gpu_memory(self, pod: str, namespace: str, used_mib: float, total_mib: float = 81559, gpus: int = 8) -> None:
        for g in range(gpus):
            labels = {"gpu": str(g), "UUID": f"GPU-{pod}-{g}", "pod": pod, "namespace": namespace,
                      "container": "worker", "modelName": "NVIDIA H100 80GB HBM3"}
            self.set("DCGM_FI_DEV_FB_USED", used_mib, **labels)
            self.set("DCGM_FI_DEV_FB_FREE", total_mib - used_mib, **labels)

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        out, typed = [], set()
        for (name, labels), value in items:
            if name not in typed:
                out.append(f"# TYPE {name} gauge")
                typed.add(name)
            lab = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append(f"{name}{{{lab}}} {value!r}" if lab else f"{name} {value!r}")
        return "\n".join(out) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "SyntheticExporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
