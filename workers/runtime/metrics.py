"""Prometheus metrics of one runtime replica, served at ``GET /metrics``.

The control plane's scraper parses these names; they are a contract. All are prefixed
``hangar_runtime_``:

=============================================  =========  ==================================
name                                           type       meaning
=============================================  =========  ==================================
``hangar_runtime_requests_total{status}``      counter    finished HTTP requests on the
                                                          ``/v1/*`` endpoints, by HTTP status
                                                          code as a string ("200", "400",
                                                          "413", "503", ...; "499" = client
                                                          disconnected before the end)
``hangar_runtime_prompt_tokens_total``         counter    prompt tokens prefilled
``hangar_runtime_completion_tokens_total``     counter    tokens generated
``hangar_runtime_requests_in_flight``          gauge      generation requests accepted and not
                                                          yet answered (queued + running)
``hangar_runtime_queue_depth``                 gauge      requests waiting to join the batch
``hangar_runtime_batch_size``                  gauge      sequences in the running batch
``hangar_runtime_time_to_first_token_seconds`` histogram  arrival to first generated token
``hangar_runtime_inter_token_latency_seconds`` histogram  gap between consecutive tokens of
                                                          one sequence
``hangar_runtime_e2e_latency_seconds``         histogram  arrival to last token
``hangar_runtime_memory_bytes{kind}``          gauge      ``kind="rss"``: process resident
                                                          memory; on CUDA also
                                                          ``kind="gpu_allocated"`` and
                                                          ``kind="gpu_reserved"``
``hangar_runtime_model_weights_bytes``        gauge      bytes of weights as loaded (after
                                                          dtype conversion / quantization)
``hangar_runtime_ready``                       gauge      1 when /health answers 200
``hangar_runtime_max_batch_size``              gauge      the configured batch limit
``hangar_runtime_prefix_cache_query_tokens_total`` counter prompt tokens looked up in the prefix
                                                          cache
``hangar_runtime_prefix_cache_hit_tokens_total``   counter of those, tokens served from the cache
``hangar_runtime_prefix_cache_hit_rate``       gauge      hit tokens / query tokens since start
``hangar_runtime_prefix_cache_bytes``          gauge      bytes of KV tensors held by the cache
``hangar_runtime_preemptions_total``           counter    sequences sent back to the queue (to be
                                                          recomputed) because the batched cache
                                                          exceeded ``--max-kv-tokens``
=============================================  =========  ==================================

Histograms expose the usual ``_bucket``/``_sum``/``_count`` series. ``_created`` series are
disabled. Memory gauges are refreshed at scrape time.
"""

from __future__ import annotations

import os
import resource
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

prometheus_client.disable_created_metrics()

PREFIX = "hangar_runtime_"
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def resident_memory_bytes() -> int:
    """Current resident set size; peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RuntimeMetrics:
    """All metrics of one replica in a private registry (no process-global state)."""

    def __init__(self, *, cuda: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(PREFIX + "requests", "Finished API requests by HTTP status.", ["status"], registry=r)
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens prefilled.", registry=r)
        self.completion_tokens = Counter(PREFIX + "completion_tokens", "Generated tokens.", registry=r)
        self.in_flight = Gauge(PREFIX + "requests_in_flight", "Requests accepted, not yet answered.", registry=r)
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Requests waiting to join the batch.", registry=r)
        self.batch_size = Gauge(PREFIX + "batch_size", "Sequences in the running batch.", registry=r)
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds", "Arrival to first token.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inter_token_latency = Histogram(
            PREFIX + "inter_token_latency_seconds", "Gap between consecutive tokens.", buckets=_ITL_BUCKETS, registry=r
        )
        self.e2e_latency = Histogram(
            PREFIX + "e2e_latency_seconds", "Arrival to last token.", buckets=_E2E_BUCKETS, registry=r
        )
        self.memory = Gauge(PREFIX + "memory_bytes", "Memory use.", ["kind"], registry=r)
        self.model_weights = Gauge(PREFIX + "model_weights_bytes", "Bytes of weights as loaded.", registry=r)
        self.ready = Gauge(PREFIX + "ready", "1 when the replica serves requests.", registry=r)
        self.max_batch_size = Gauge(PREFIX + "max_batch_size", "Configured batch limit.", registry=r)
        self.prefix_query_tokens = Counter(
            PREFIX + "prefix_cache_query_tokens", "Prompt tokens looked up in the prefix cache.", registry=r
        )
        self.prefix_hit_tokens = Counter(
            PREFIX + "prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache.", registry=r
        )
        self.prefix_hit_rate = Gauge(
            PREFIX + "prefix_cache_hit_rate", "Prefix cache hit tokens / query tokens.", registry=r
        )
        self.prefix_bytes = Gauge(PREFIX + "prefix_cache_bytes", "Bytes of KV held by the prefix cache.", registry=r)
        self._prefix_seen = (0, 0)
        self.preemptions = Counter(
            PREFIX + "preemptions", "Sequences sent back to the queue because the KV budget was short.", registry=r
        )
        self._cuda = cuda
        # Pre-create the common label values so scrapers see zeros, not missing series.
        for status in ("200", "400", "503"):
            self.requests.labels(status=status)

    def observe_prefix_cache(self, cache: Any) -> None:
        """Bring the prefix cache series up to date with ``cache``'s counters."""
        queried, hit = self._prefix_seen
        self.prefix_query_tokens.inc(cache.queried_tokens - queried)
        self.prefix_hit_tokens.inc(cache.hit_tokens - hit)
        self._prefix_seen = (cache.queried_tokens, cache.hit_tokens)
        self.prefix_hit_rate.set(cache.hit_rate)
        self.prefix_bytes.set(cache.bytes)

    def render(self) -> bytes:
        """Refresh scrape-time gauges and return the text exposition format."""
        self.memory.labels(kind="rss").set(resident_memory_bytes())
        if self._cuda:
            torch: Any = __import__("torch")
            self.memory.labels(kind="gpu_allocated").set(torch.cuda.memory_allocated())
            self.memory.labels(kind="gpu_reserved").set(torch.cuda.memory_reserved())
        return prometheus_client.generate_latest(self.registry)
