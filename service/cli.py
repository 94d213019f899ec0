"""`serve(settings)`: run the service under uvicorn (wired into `rsd serve`; `python -m service` too).

Shutdown follows Kubernetes: on SIGTERM /readyz turns 503 at once, new upscale requests get 503 during
`drain_delay_s` (load balancers still routing here), then uvicorn stops accepting, in-flight requests
finish (at most `shutdown_timeout_s`), the batcher drains, and the process exits 0.
"""

import signal
import sys
import threading
from types import FrameType

import uvicorn

from service.app import create_app
from service.backends import BackendError, load_backend
from service.logs import configure_logging
from service.settings import Settings
from service.state import ServiceState


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServiceState, drain_delay_s: float):
        super().__init__(config)
        self.state = state
        self.drain_delay_s = drain_delay_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining or self.drain_delay_s <= 0:
            self.state.draining = True
            super().handle_exit(sig, frame)
            return
        self.state.draining = True  # a second signal during the delay exits at once
        timer = threading.Timer(self.drain_delay_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def _ignore(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal it handled after a graceful stop; a drained exit is a success."""


def serve(settings: Settings) -> None:
    """Load the model (a bad one ends the process with one clear line and exit code 2), then serve."""
    configure_logging(settings.log_level, settings.log_format)
    try:
        backend = load_backend(settings)
    except BackendError as e:
        print(f"rsd serve: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings, backend)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the app logs one line per request, with its request id
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    server = _DrainingServer(config, app.state.service, settings.drain_delay_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    server.run()
    if not server.started:  # e.g. the port is taken; uvicorn has logged why
        raise SystemExit(1)
