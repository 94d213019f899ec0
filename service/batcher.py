"""Dynamic batcher: bounded queues of tiles across all requests, one per tile size, owned by one asyncio task.

Work is counted in tiles of the model's tile size (`tile_size`, the unit of every limit and metric): a
tile of size t counts (t / tile_size)^2, so a queue of 64 holds the same work whatever sizes the images
were cut into. Flow of a request (all on the event loop, so no locks):
1. `admit(n)` reserves n tiles right after the image header is read, before decoding, so a full queue
   answers 429 at once and decode work is never spent on a request that cannot be served;
2. `submit(admission, tiles, deadline)` turns the reservation into a job, its tiles grouped by size, and
   puts it in the queue of each size it has;
3. the worker task forms each batch from one size's queue, the size whose oldest job is the oldest of all
   (first come, first served across sizes), with up to `batch_limits[size]` tiles from the oldest jobs (a
   job may span batches, a batch may mix jobs), skipping jobs whose client left or whose deadline
   passed, and runs it on one inference thread. While a batch runs, the next one is gathered and
   assembled, and it is dispatched the moment the model is free: an idle model waits at most
   `max_wait_ms` for a fuller batch, a busy model never waits;
4. results are scattered back as views of the batch output; a failing batch fails only its jobs.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
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
from service.tiling import TileBatch

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TileResult:
    chunks: dict[int, list[np.ndarray]]  # tile size -> (k_i, 3, s*t, s*t) float32 pieces, in tile order
    queue_s: float  # submit -> first batch start
    inference_s: float  # first batch start -> last batch end


@dataclass(eq=False)
class Job:
    tiles: Mapping[int, TileBatch]  # tile size -> this request's tiles of that size
    deadline: float  # time.perf_counter() clock
    future: asyncio.Future[TileResult]
    submitted: float = field(default_factory=time.perf_counter)
    next: dict[int, int] = field(default_factory=dict)  # tile size -> next tile to send to the model
    done: int = 0  # tiles returned
    chunks: dict[int, list[np.ndarray]] = field(default_factory=dict)
    started: float | None = None

    @property
    def count(self) -> int:
        return sum(len(batch.lq) for batch in self.tiles.values())

    def remaining(self, size: int) -> int:
        return len(self.tiles[size].lq) - self.next[size]


@dataclass
class _Batch:
    size: int  # tile size
    parts: list[tuple[Job, int]]  # (job, tiles taken from it), in batch order
    inputs: TileBatch


class Admission:
    """Work reserved in the queue; hand it to `Batcher.submit`, or `release` it if decoding fails."""

    def __init__(self, batcher: "Batcher", pixels: int):
        self.batcher = batcher
        self.pixels = pixels
        self.open = True

    def release(self) -> None:
        if self.open:
            self.open = False
            self.batcher._unreserve(self.pixels)


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        *,
        tile_size: int,
        batch_limits: Mapping[int, int],
        max_wait_ms: float,
        max_queue_tiles: int,
        metrics: Metrics | None = None,
    ):
        """`batch_limits`: the most tiles of each size in one batch (ModelInfo.batch_limits)."""
        self._run = run
        self.tile_size = tile_size
        self.batch_limits = dict(batch_limits)
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue_tiles
        self._metrics = metrics or Metrics()
        # Work is kept in LR pixels, exact integers; limits and metrics show it in tiles of tile_size.
        self._unit = tile_size * tile_size
        self._queues: dict[int, deque[Job]] = {size: deque() for size in self.batch_limits}  # oldest first
        self._live: set[Job] = set()  # jobs whose future is unresolved
        self._reserved = 0  # pixels admitted, not yet submitted
        self._pending = 0  # pixels submitted, not yet sent to the model
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rsd-infer")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._tiles_per_s = 0.0  # model speed (moving average), for Retry-After

    @property
    def queued_tiles(self) -> float:
        return (self._reserved + self._pending) / self._unit

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="rsd-batcher")

    # ---- called by request handlers -----------------------------------------------------------

    def refuse_if_full(self, tiles: float = 1) -> None:
        """503 while draining, 429 when `tiles` more do not fit; cheap enough to run before reading a body."""
        if self._closing:
            raise Draining("the service is shutting down")
        if tiles <= self.max_queue and self.queued_tiles + tiles > self.max_queue:
            raise Overloaded(
                f"the queue is full ({self.queued_tiles:g} of {self.max_queue} tiles)", self.retry_after_s()
            )

    def admit(self, tiles: float) -> Admission:
        """Reserve `tiles` or refuse at once: 503 while draining, 413 if it can never fit, else 429."""
        self.refuse_if_full(tiles)
        if tiles > self.max_queue:
            raise PayloadTooLarge(
                f"the image needs {tiles:g} tiles; this server queues at most {self.max_queue}"
            )
        pixels = round(tiles * self._unit)
        self._reserved += pixels
        self._gauge()
        return Admission(self, pixels)

    def submit(self, admission: Admission, tiles: Mapping[int, TileBatch], deadline: float) -> Job:
        """`tiles`: the request's tiles grouped by size, each size in the order its results come back."""
        assert admission.open and admission.batcher is self
        admission.open = False
        self._reserved -= admission.pixels
        job = Job(tiles, deadline, asyncio.get_running_loop().create_future())
        for size, batch in tiles.items():
            job.next[size], job.chunks[size] = 0, []
            self._queues[size].append(job)
            self._pending += len(batch.lq) * size * size
        self._live.add(job)
        job.future.add_done_callback(lambda _: self._live.discard(job))
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

    def _unreserve(self, pixels: int) -> None:
        self._reserved -= pixels
        self._gauge()
        self._wakeup.set()

    def _gauge(self) -> None:
        self._metrics.queue_tiles.set(self.queued_tiles)

    def _drop(self, job: Job, reason: str, error: ServiceError | None) -> None:
        if job.future.done():
            return
        dropped = 0
        for size in job.tiles:
            if job.remaining(size):
                dropped += job.remaining(size) * size * size
                job.next[size] = len(job.tiles[size].lq)
                self._queues[size].remove(job)
        if dropped:
            self._metrics.tiles_dropped.labels(reason).inc(dropped / self._unit)
            self._pending -= dropped
            self._gauge()
        if error is None:
            job.future.cancel()
        else:
            job.future.set_exception(error)

    def _next_size(self) -> int | None:
        """The tile size of the next batch: the one whose oldest waiting job is the oldest of all."""
        heads = [(queue[0].submitted, size) for size, queue in self._queues.items() if queue]
        return min(heads)[1] if heads else None

    def _batch_is_full(self, size: int) -> bool:
        waiting = 0
        for job in self._queues[size]:
            waiting += job.remaining(size)
            if waiting >= self.batch_limits[size]:
                return True
        return False

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
            size = self._next_size()
            if size is not None and self._batch_is_full(size):
                return True
            if running is not None:
                if running[1].done():
                    return True
            elif size is not None:
                timeout = self._queues[size][0].submitted + self.max_wait_s - time.perf_counter()
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
        size, now = self._next_size(), time.perf_counter()
        if size is None:
            return None
        queue, limit = self._queues[size], self.batch_limits[size]
        parts: list[tuple[Job, int]] = []
        taken = 0
        while queue and taken < limit:
            job = queue[0]
            if now > job.deadline:
                self._drop(
                    job, "deadline", DeadlineExceeded("the request deadline passed while it was queued")
                )
                continue
            k = min(job.remaining(size), limit - taken)
            parts.append((job, k))
            job.next[size] += k
            taken += k
            if not job.remaining(size):
                queue.popleft()
        if not parts:  # every job of this size had expired; the next call takes another size
            return None
        self._pending -= taken * size * size
        self._gauge()
        spans = [(job.tiles[size], slice(job.next[size] - k, job.next[size])) for job, k in parts]
        fields = range(len(TileBatch._fields))  # lq, noise_prior, noise_student
        inputs = TileBatch(*(_cat([tiles[field][span] for tiles, span in spans]) for field in fields))
        return _Batch(size, parts, inputs)

    def _infer(self, batch: _Batch) -> tuple[np.ndarray, float, float]:
        """Runs on the inference thread."""
        start = time.perf_counter()
        sr = self._run(*batch.inputs)
        if sr.shape[0] != batch.inputs.lq.shape[0]:
            raise RuntimeError(
                f"backend returned {sr.shape[0]} tiles for a batch of {batch.inputs.lq.shape[0]}"
            )
        return sr, start, time.perf_counter()

    def _deliver(self, batch: _Batch, outcome: asyncio.Future) -> None:
        n = batch.inputs.lq.shape[0]
        try:
            sr, start, end = outcome.result()
        except Exception:
            log.exception("inference failed for a batch of %d tiles of %d", n, batch.size)
            for job, _ in batch.parts:
                self._drop(
                    job, "failed", InferenceFailed("the model failed on the batch holding this request")
                )
            return
        tiles = n * batch.size * batch.size / self._unit
        self._metrics.inference_seconds.observe(end - start)
        self._metrics.batch_tiles.observe(tiles)
        self._metrics.tiles.inc(tiles)
        speed = tiles / max(end - start, 1e-6)
        self._tiles_per_s = speed if self._tiles_per_s == 0 else 0.8 * self._tiles_per_s + 0.2 * speed
        offset = 0
        for job, k in batch.parts:
            if not job.future.done():
                job.chunks[batch.size].append(sr[offset : offset + k])
                job.done += k
                job.started = start if job.started is None else job.started
                if job.done == job.count:
                    queue_s = job.started - job.submitted
                    self._metrics.queue_seconds.observe(queue_s)
                    job.future.set_result(TileResult(job.chunks, queue_s, end - job.started))
            offset += k


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
