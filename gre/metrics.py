"""Prometheus metrics, collected in the front end.

Replica processes report to the front end rather than through prometheus-client's
multiprocess mode: every batch reply already carries its preprocess and inference times, so
the front end observes them with no shared directory to manage, and a restarted replica
loses nothing. Names follow Prometheus conventions (base units, ``_total``, ``_seconds``,
``_bytes``). Each :class:`Metrics` has its own registry, so several services in one process
(tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("gre.metrics")

#: Latency buckets for a low-latency service: 0.5 ms to 10 s.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def batch_size_buckets(max_batch_size: int) -> list[float]:
    """Every size 1..max_batch_size when few, else powers of two and the maximum."""
    if max_batch_size <= 32:
        return [float(n) for n in range(1, max_batch_size + 1)]
    sizes = {float(2**k) for k in range(max_batch_size.bit_length()) if 2**k <= max_batch_size}
    return sorted(sizes | {float(max_batch_size)})


class Metrics:
    """gre's metrics (see README, "Metrics") in a registry of their own."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gre_requests", "Classification requests answered, by HTTP status.", ["code"],
            registry=r,
        )  # fmt: skip
        self._answered: dict[int, Any] = {}  # status -> its gre_requests_total child
        self.request_duration = Histogram(
            "gre_request_duration_seconds", "End-to-end request time, body read to answer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_duration = Histogram(
            "gre_queue_duration_seconds", "Time a request waited in the queue.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.preprocess_duration = Histogram(
            "gre_preprocess_duration_seconds", "Decode + preprocess time of a batch.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "gre_inference_duration_seconds", "Forward time of a batch.", ["replica", "device"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "gre_batch_size", "Images per dispatched batch.",
            buckets=batch_size_buckets(max_batch_size), registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "gre_rejected", "Requests refused, by reason.", ["reason"], registry=r
        )
        self.queue_depth = Gauge("gre_queue_depth", "Requests waiting in the queue.", registry=r)
        self.inflight_body_bytes = Gauge(
            "gre_inflight_body_bytes",
            "Request body bytes held now (declared or received, until answered).",
            registry=r,
        )
        self.features_blobs = Counter(
            "gre_features_blobs", "Blobs returned by /api/features, by blob name.", ["blob"],
            registry=r,
        )  # fmt: skip
        self.worker_requests = Counter(
            "gre_http_worker_requests", "Requests each HTTP worker process handed over "
            "(server.workers > 1), by worker.", ["worker"], registry=r,
        )  # fmt: skip
        self.worker_restarts = Counter(
            "gre_http_worker_restarts", "HTTP worker processes replaced after they died.",
            registry=r,
        )  # fmt: skip
        self.reloads = Counter(
            "gre_reloads", "Model reloads, by outcome (ok, failed).", ["outcome"], registry=r
        )
        self.model_info = Gauge(
            "gre_model_info", "The model serving now (value 1), with its version.",
            ["name", "version"], registry=r,
        )  # fmt: skip

    def observe_batch(
        self, replica: str, device: str, size: int, preprocess_s: float, inference_s: float
    ) -> None:
        """Record one batch a replica answered."""
        self.batch_size.observe(size)
        self.preprocess_duration.observe(preprocess_s)
        self.inference_duration.labels(replica, device).observe(inference_s)

    def answered(self, status: int) -> None:
        """Count one request answered ``status`` (``gre_requests_total{code}``); each code's
        child is looked up once, not per request."""
        child = self._answered.get(status)
        if child is None:
            child = self._answered[status] = self.requests.labels(str(status))
        child.inc()

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class ReplicaCollector(Collector):
    """``gre_replicas{state}`` and ``gre_replica_restarts_total``, read at scrape time."""

    def __init__(self, states: Callable[[], dict[str, int]], restarts: Callable[[], int]) -> None:
        self._states = states
        self._restarts = restarts

    def collect(self) -> Iterator[Any]:
        replicas = GaugeMetricFamily("gre_replicas", "Replicas by state.", labels=["state"])
        for state, count in self._states().items():
            replicas.add_metric([state], count)
        yield replicas
        yield CounterMetricFamily(
            "gre_replica_restarts", "Replica restarts after a crash or hang.",
            value=self._restarts(),
        )  # fmt: skip


class GpuCollector(Collector):
    """Per-GPU utilization, memory and power from NVML, sampled at scrape time.

    Yields nothing (the metrics are absent, not zero) when NVML or a GPU is unavailable.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self._nvml = pynvml
        except Exception as exc:  # no driver, no library: no GPU metrics
            log.debug("no GPU metrics: %s", exc)

    def collect(self) -> Iterator[Any]:
        if self._nvml is None:
            return
        nvml = self._nvml
        families = {
            "utilization": GaugeMetricFamily(
                "gre_gpu_utilization_ratio", "GPU busy fraction (0-1).", labels=["gpu"]
            ),
            "used": GaugeMetricFamily(
                "gre_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
            ),
            "total": GaugeMetricFamily(
                "gre_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
            ),
            "power": GaugeMetricFamily("gre_gpu_power_watts", "GPU power draw.", labels=["gpu"]),
        }
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpu = [str(index)]
                families["utilization"].add_metric(
                    gpu, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                )
                families["used"].add_metric(gpu, float(memory.used))
                families["total"].add_metric(gpu, float(memory.total))
                families["power"].add_metric(gpu, nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        except Exception as exc:
            log.warning("NVML query failed: %s", exc)
            return
        yield from families.values()
