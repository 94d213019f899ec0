"""Dynamic batcher: one bounded queue of tiles across all requests, owned by one asyncio task.

Flow of a request (all on the event loop, so no locks):
1. `admit(n)` reserves n tiles right after the image header is read, before decoding, so a full queue
   answers 429 at once and decode work is never spent on a request that cannot be served;
2. `submit(admission, tiles...)` turns the reservation into a job with a deadline;
3. the worker task forms batches of up to `max_batch_tiles` from the oldest jobs (a job may span
   batches, a batch may mix jobs), skipping jobs whose client left or whose deadline passed, and runs
   them on one inference thread. While a batch runs, the next one is gathered and assembled, and it is
   dispatched the moment the model is free: an idle model waits at most `max_wait_ms` for a fuller batch,
   a busy model never waits;
4. results are scattered back as views of the batch output; a failing batch fails only its jobs.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.errors import (
    DeadlineExceeded,
    Draining,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
)
from service.metrics import Metrics

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TileResult:
    chunks: list[np.ndarray]  # (k_i, 3, s*t, s*t) float32 pieces, in tile order
    queue_s: float  # submit -> first batch start
    inference_s: float  # first batch start -> last batch end


@dataclass(eq=False)
class Job:
    lq: np.ndarray  # (N, 3, t, t)
    noise_prior: np.ndarray  # (N, 3, t, t)
    noise_student: np.ndarray  # (N, 1, t, t)
    deadline: float  # time.perf_counter() clock
    future: asyncio.Future[TileResult]
    submitted: float = field(default_factory=time.perf_counter)
    next: int = 0  # next tile to send to the model
    done: int = 0  # tiles returned
    chunks: list[np.ndarray] = field(default_factory=list)
    started: float | None = None

    @property
    def count(self) -> int:
        return self.lq.shape[0]

    @property
    def remaining(self) -> int:
        return self.count - self.next


@dataclass
class _Batch:
    parts: list[tuple[Job, int]]  # (job, tiles taken from it), in batch order
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray]  # lq, noise_prior, noise_student


class Admission:
    """Tiles reserved in the queue; hand it to `Batcher.submit`, or `release` it if decoding fails."""

    def __init__(self, batcher: "Batcher", tiles: int):
        self.batcher = batcher
        self.tiles = tiles
        self.open = True

    def release(self) -> None:
        if self.open:
            self.open = False
            self.batcher._unreserve(self.tiles)


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch_tiles: int,
        max_wait_ms: float,
        max_queue_tiles: int,
        metrics: Metrics | None = None,
    ):
        self._run = run
        self.max_batch = max_batch_tiles
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue_tiles
        self._metrics = metrics or Metrics()
        self._jobs: deque[Job] = deque()  # jobs with tiles not yet sent to the model, oldest first
        self._live: set[Job] = set()  # jobs whose future is unresolved
        self._reserved = 0  # admitted, not yet submitted
        self._pending = 0  # submitted, not yet sent to the model
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rsd-infer")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._tiles_per_s = 0.0  # model speed (moving average), for Retry-After

    @property
    def queued_tiles(self) -> int:
        return self._reserved + self._pending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="rsd-batcher")

    # ---- called by request handlers -----------------------------------------------------------

    def refuse_if_full(self, tiles: int = 1) -> None:
        """503 while draining, 429 when `tiles` more do not fit; cheap enough to run before reading a body."""
        if self._closing:
            raise Draining("the service is shutting down")
        if tiles <= self.max_queue and self.queued_tiles + tiles > self.max_queue:
            raise Overloaded(
                f"the queue is full ({self.queued_tiles} of {self.max_queue} tiles)", self.retry_after_s()
            )

    def admit(self, tiles: int) -> Admission:
        """Reserve `tiles` or refuse at once: 503 while draining, 413 if it can never fit, else 429."""
        self.refuse_if_full(tiles)
        if tiles > self.max_queue:
            raise PayloadTooLarge(
                f"the image needs {tiles} tiles; this server queues at most {self.max_queue}"
            )
        self._reserved += tiles
        self._gauge()
        return Admission(self, tiles)

    def submit(
        self,
        admission: Admission,
        lq: np.ndarray,
        noise_prior: np.ndarray,
        noise_student: np.ndarray,
        deadline: float,
    ) -> Job:
        assert admission.open and admission.batcher is self
        admission.open = False
        self._reserved -= admission.tiles
        job = Job(lq, noise_prior, noise_student, deadline, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._live.add(job)
        job.future.add_done_callback(lambda _: self._live.discard(job))
        self._pending += job.count
        self._gauge()
        self._wakeup.set()
        return job

    def cancel(self, job: Job, reason: str) -> None:
        """The handler gave up on `job` (client left, deadline); its unsent tiles never reach the model."""
        self._drop(job, reason, None)

    def retry_after_s(self) -> int:
        """Seconds until the queue has drained at the model's recent speed (1 to 30)."""
        if self._tiles_per_s <= 0:
            return 1
        return min(30, max(1, math.ceil(self.queued_tiles / self._tiles_per_s)))

    async def close(self, timeout_s: float) -> None:
        """Finish the queued jobs (new ones are refused), failing what is left after `timeout_s`."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                for job in list(self._live):
                    self._drop(
                        job, "shutdown", Draining("the service shut down before this request finished")
                    )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._executor.shutdown(wait=False)  # a batch still running after the timeout is abandoned

    # ---- the worker --------------------------------------------------------------------------

    def _unreserve(self, tiles: int) -> None:
        self._reserved -= tiles
        self._gauge()
        self._wakeup.set()

    def _gauge(self) -> None:
        self._metrics.queue_tiles.set(self.queued_tiles)

    def _drop(self, job: Job, reason: str, error: ServiceError | None) -> None:
        if job.future.done():
            return
        if job.remaining:
            self._metrics.tiles_dropped.labels(reason).inc(job.remaining)
            self._pending -= job.remaining
            job.next = job.count
            self._jobs.remove(job)
            self._gauge()
        if error is None:
            job.future.cancel()
        else:
            job.future.set_exception(error)

    async def _loop(self) -> None:
        try:
            await self._serve()
        except Exception:  # a bug here must not leave requests hanging until their deadline
            log.exception("the batcher stopped")
            self._closing = True
            for job in list(self._live):
                self._drop(job, "failed", InferenceFailed("the batcher stopped"))
            raise

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        running: tuple[_Batch, asyncio.Future] | None = None
        while True:
            if not await self._gather(running):
                return
            batch = self._take()  # assembled while the previous batch may still run
            finished = None
            if running is not None:
                await asyncio.wait({running[1]})
                finished, running = running, None
            if batch is not None:
                running = (batch, loop.run_in_executor(self._executor, self._infer, batch))
            if finished is not None:
                self._deliver(*finished)

    async def _gather(self, running: tuple[_Batch, asyncio.Future] | None) -> bool:
        """Wait until a batch should be taken; False when closing and everything is done."""
        while True:
            timeout = None
            if self._pending >= self.max_batch:
                return True
            if running is not None:
                if running[1].done():
                    return True
            elif self._pending:
                timeout = self._jobs[0].submitted + self.max_wait_s - time.perf_counter()
                if timeout <= 0 or self._closing:
                    return True
            elif self._closing and not self._reserved:
                return False
            self._wakeup.clear()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            await asyncio.wait(
                {waiter} | ({running[1]} if running else set()),
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()

    def _take(self) -> _Batch | None:
        parts: list[tuple[Job, int]] = []
        size, now = 0, time.perf_counter()
        while self._jobs and size < self.max_batch:
            job = self._jobs[0]
            if now > job.deadline:
                self._drop(
                    job, "deadline", DeadlineExceeded("the request deadline passed while it was queued")
                )
                continue
            k = min(job.remaining, self.max_batch - size)
            parts.append((job, k))
            job.next += k
            size += k
            if not job.remaining:
                self._jobs.popleft()
        if not parts:
            return None
        self._pending -= size
        self._gauge()
        spans = [(job, slice(job.next - k, job.next)) for job, k in parts]
        lq = _cat([job.lq[s] for job, s in spans])
        prior = _cat([job.noise_prior[s] for job, s in spans])
        student = _cat([job.noise_student[s] for job, s in spans])
        return _Batch(parts, (lq, prior, student))

    def _infer(self, batch: _Batch) -> tuple[np.ndarray, float, float]:
        """Runs on the inference thread."""
        start = time.perf_counter()
        sr = self._run(*batch.inputs)
        if sr.shape[0] != batch.inputs[0].shape[0]:
            raise RuntimeError(
                f"backend returned {sr.shape[0]} tiles for a batch of {batch.inputs[0].shape[0]}"
            )
        return sr, start, time.perf_counter()

    def _deliver(self, batch: _Batch, outcome: asyncio.Future) -> None:
        n = batch.inputs[0].shape[0]
        try:
            sr, start, end = outcome.result()
        except Exception:
            log.exception("inference failed for a batch of %d tiles", n)
            for job, _ in batch.parts:
                self._drop(
                    job, "failed", InferenceFailed("the model failed on the batch holding this request")
                )
            return
        self._metrics.inference_seconds.observe(end - start)
        self._metrics.batch_tiles.observe(n)
        self._metrics.tiles.inc(n)
        speed = n / max(end - start, 1e-6)
        self._tiles_per_s = speed if self._tiles_per_s == 0 else 0.8 * self._tiles_per_s + 0.2 * speed
        offset = 0
        for job, k in batch.parts:
            if not job.future.done():
                job.chunks.append(sr[offset : offset + k])
                job.done += k
                job.started = start if job.started is None else job.started
                if job.done == job.count:
                    queue_s = job.started - job.submitted
                    self._metrics.queue_seconds.observe(queue_s)
                    job.future.set_result(TileResult(job.chunks, queue_s, end - job.started))
            offset += k


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
