"""Prometheus metrics, one registry per app (tests build many apps in one process).

Names follow Triton's semantics with an `rsd_` prefix: average batch size is
rsd_batch_tiles_sum / rsd_batch_tiles_count, queue time and compute time are separate histograms,
and the queue depth gauge is what an autoscaler should watch. Tiles are counted in tiles of the model's
tile size (`tile_size` below), so a model with graphs for several sizes reports work, not pieces: one
256 tile of a 128 model counts 4, a 64 tile 0.25.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from service.backends.base import ModelInfo

disable_created_metrics()  # process-wide: the *_created series only add noise to /metrics

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rsd_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "rsd_request_duration_seconds", "Upscale request latency.", buckets=_LATENCY, registry=r
        )
        self.queue_seconds = Histogram(
            "rsd_queue_duration_seconds",
            "Time a request waited for its first batch.",
            buckets=_LATENCY,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "rsd_inference_duration_seconds", "Time of one model batch.", buckets=_LATENCY, registry=r
        )
        self.batch_tiles = Histogram(
            "rsd_batch_tiles", "Tiles per model batch.", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.queue_tiles = Gauge(
            "rsd_queue_tiles", "Tiles admitted and not yet sent to the model.", registry=r
        )
        self.inflight = Gauge("rsd_inflight_requests", "Upscale requests being served.", registry=r)
        self.tiles = Counter("rsd_tiles", "Tiles run through the model.", registry=r)
        self.tiles_dropped = Counter(
            "rsd_tiles_dropped", "Tiles dropped before the model.", ["reason"], registry=r
        )
        self.rejections = Counter("rsd_rejections", "Refused requests by reason.", ["reason"], registry=r)
        self.model = Info("rsd_model", "The served model.", registry=r)

    def set_model(self, info: ModelInfo) -> None:
        self.model.info(
            {
                "name": info.name,
                "version": info.version,
                "backend": info.backend,
                "precision": info.precision,
                "scale": str(info.scale),
                "tile_size": str(info.tile_size),
                "tile_sizes": ",".join(map(str, info.tile_sizes)),
            }
        )
