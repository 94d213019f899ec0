"""What the running app holds: settings, metrics, the loaded backend and its batcher, readiness."""

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.backends import Backend
from service.batcher import Batcher
from service.metrics import Metrics
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    cpu_pool: ThreadPoolExecutor  # decode, tiling, blending, encoding: off the event loop
    backend: Backend | None = None
    batcher: Batcher | None = None
    ready: bool = False  # model loaded and one warm-up batch done
    draining: bool = False  # shutting down: readiness and new requests answer 503
    key_digests: list[bytes] = field(default_factory=list)  # sha256 of each API key

    @classmethod
    def create(cls, settings: Settings, backend: Backend | None) -> "ServiceState":
        return cls(
            settings=settings,
            metrics=Metrics(),
            cpu_pool=ThreadPoolExecutor(
                len(os.sched_getaffinity(0)) or 2, thread_name_prefix="rsd-cpu", initializer=_yield_to_model
            ),
            backend=backend,
            key_digests=[hashlib.sha256(k.get_secret_value().encode()).digest() for k in settings.api_keys],
        )


def _yield_to_model() -> None:
    """Decode/encode threads run at a lower priority than the model's threads (Linux nice is per thread).

    On a few CPU cores they compete with inference; at lower priority they fill the model's idle gaps
    instead of stealing its cores, so the model stays busy at saturation.
    """
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS 0 would lower the whole process
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 10)
