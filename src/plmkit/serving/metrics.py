"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

    plmkit_requests_total{endpoint, status}             answered requests
    plmkit_request_latency_seconds{endpoint}            arrival to last byte (histogram)
    plmkit_time_to_first_token_seconds{model}           streamed or not, arrival to the first token
    plmkit_prompt_tokens_total{model}, plmkit_generation_tokens_total{model}
    plmkit_queue_depth{model, batcher}                  requests waiting for a batch / a free row
    plmkit_running_sequences{model, batcher}            rows of a decoder's batch in use
    plmkit_batch_size{model, batcher}                   inputs per encoder batch, rows per decoding step

``batcher`` names a model's batcher by its work: "encode" (embeddings, the task routes) or "generate"
(completions, chat); an encoder-decoder task model has both, on one model name.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("plmkit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.latency = Histogram("plmkit_request_latency_seconds", "request latency, arrival to last byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("plmkit_time_to_first_token_seconds", "arrival to the first generated token",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("plmkit_prompt_tokens", "input tokens read", ["model"], registry=r)
        self.generation_tokens = Counter("plmkit_generation_tokens", "tokens generated", ["model"], registry=r)
        per_batcher = ["model", "batcher"]
        self.queue_depth = Gauge("plmkit_queue_depth", "requests waiting", per_batcher, registry=r)
        self.running = Gauge("plmkit_running_sequences", "sequences being decoded", per_batcher, registry=r)
        self.batch_size = Histogram("plmkit_batch_size", "inputs per encoder batch, sequences per decoding step",
                                    per_batcher, buckets=BATCH_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["Metrics"]
