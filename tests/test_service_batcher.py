"""The dynamic batcher against the real ONNX Runtime backend, one test per edge case."""

import asyncio
import time

import numpy as np
import pytest

from service.backends.model_set import ModelSet
from service.backends.onnxruntime import OnnxRuntimeBackend
from service.batcher import Batcher
from service.errors import DeadlineExceeded, Draining, InferenceFailed, Overloaded, PayloadTooLarge
from service.metrics import Metrics
from service.tiling import TileBatch
from tests.onnx_fixture import build_fixture_model

TILE = 8


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OnnxRuntimeBackend(
        build_fixture_model(tmp_path_factory.mktemp("m") / "m.onnx", tile=TILE), threads=1
    )


@pytest.fixture(scope="module")
def model_set(backend, tmp_path_factory):
    """Graphs of tile 8 and 16; work counts in tiles of 8, so a batch of 8 such holds two tiles of 16."""
    large = build_fixture_model(tmp_path_factory.mktemp("m16") / "m16.onnx", tile=2 * TILE)
    return ModelSet({TILE: lambda: backend, 2 * TILE: lambda: OnnxRuntimeBackend(large, threads=1)}, TILE)


class Recorder:
    """Wraps the real backend's run to see what reaches the model; poisoned tiles (lq < 0) fail the batch."""

    def __init__(self, backend):
        self.backend = backend
        self.batches: list[int] = []
        self.sizes: list[int] = []

    def __call__(self, lq, prior, student):
        self.batches.append(lq.shape[0])
        self.sizes.append(lq.shape[-1])
        if (lq < 0).any():
            raise RuntimeError("poisoned batch")
        return self.backend.run(lq, prior, student)


def tiles(n, seed=0, value=None, size=TILE):
    rng = np.random.default_rng(seed)
    lq = (
        rng.random((n, 3, size, size), dtype=np.float32)
        if value is None
        else np.full((n, 3, size, size), value, np.float32)
    )
    return TileBatch(
        lq,
        rng.standard_normal((n, 3, size, size), dtype=np.float32),
        rng.standard_normal((n, 1, size, size), dtype=np.float32),
    )


def submit(batcher, arrays, deadline_s=30.0):
    return batcher.submit(batcher.admit(arrays[0].shape[0]), {TILE: arrays}, time.perf_counter() + deadline_s)


def make(run, metrics=None, max_batch_tiles=8, **kw):
    options = {"max_wait_ms": 20, "max_queue_tiles": 64} | kw
    batcher = Batcher(run, tile_size=TILE, batch_limits={TILE: max_batch_tiles}, metrics=metrics, **options)
    batcher.start()
    return batcher


def test_requests_share_batches_and_get_their_own_tiles_back(backend):
    async def main():
        recorder = Recorder(backend)
        batcher = make(recorder)
        inputs = [tiles(3, seed=i) for i in range(10)]
        jobs = [submit(batcher, arrays) for arrays in inputs]
        results = await asyncio.gather(*(job.future for job in jobs))
        for arrays, result in zip(inputs, results, strict=True):
            np.testing.assert_allclose(np.concatenate(result.chunks[TILE]), backend.run(*arrays), atol=1e-6)
        await batcher.close(5)
        return recorder.batches

    assert asyncio.run(main()) == [8, 8, 8, 6]  # 10 requests of 3 tiles; requests span batches


def test_a_busy_model_never_idles_for_max_wait(backend):
    async def main():
        batcher = make(backend.run, max_wait_ms=5000)
        start = time.perf_counter()
        await submit(batcher, tiles(8)).future  # a full batch goes at once
        await batcher.close(5)
        return time.perf_counter() - start

    assert asyncio.run(main()) < 2


def test_an_idle_model_waits_up_to_max_wait_for_a_fuller_batch(backend):
    async def main():
        recorder = Recorder(backend)
        batcher = make(recorder, max_wait_ms=300)
        first = submit(batcher, tiles(1))
        await asyncio.sleep(0.05)
        second = submit(batcher, tiles(2))
        await asyncio.gather(first.future, second.future)
        await batcher.close(5)
        return recorder.batches

    assert asyncio.run(main()) == [3]


def test_full_queue_refuses_at_once_with_retry_after(backend):
    async def main():
        batcher = make(backend.run, max_queue_tiles=8)
        held = batcher.admit(6)
        with pytest.raises(Overloaded) as refused:
            batcher.admit(3)
        assert int(refused.value.headers["Retry-After"]) >= 1
        with pytest.raises(PayloadTooLarge):
            batcher.admit(9)  # could never fit
        held.release()
        await batcher.close(1)

    asyncio.run(main())


def test_released_admission_frees_its_tiles(backend):
    async def main():
        batcher = make(backend.run, max_queue_tiles=8)
        admission = batcher.admit(8)
        admission.release()
        admission.release()  # idempotent
        batcher.admit(8).release()
        await batcher.close(1)

    asyncio.run(main())


def test_cancelled_job_never_reaches_the_model(backend):
    async def main():
        metrics = Metrics()
        recorder = Recorder(backend)
        batcher = make(recorder, metrics, max_wait_ms=100)
        gone = submit(batcher, tiles(5))
        batcher.cancel(gone, "disconnect")
        assert batcher.queued_tiles == 0
        await submit(batcher, tiles(2)).future
        await batcher.close(5)
        return recorder.batches, metrics.tiles_dropped.labels("disconnect")._value.get()

    batches, dropped = asyncio.run(main())
    assert batches == [2] and dropped == 5


def test_expired_deadline_is_dropped_before_the_model(backend):
    async def main():
        metrics = Metrics()
        recorder = Recorder(backend)
        batcher = make(recorder, metrics)
        late = submit(batcher, tiles(4), deadline_s=-1)
        with pytest.raises(DeadlineExceeded):
            await late.future
        await batcher.close(5)
        return recorder.batches, metrics.tiles_dropped.labels("deadline")._value.get()

    assert asyncio.run(main()) == ([], 4)


def test_a_failing_batch_fails_only_its_own_requests(backend):
    async def main():
        batcher = make(Recorder(backend), max_batch_tiles=4)
        poisoned = submit(batcher, tiles(4, value=-1.0))
        healthy = submit(batcher, tiles(4))
        outcome = await asyncio.gather(poisoned.future, healthy.future, return_exceptions=True)
        await batcher.close(5)
        return outcome

    failed, ok = asyncio.run(main())
    assert isinstance(failed, InferenceFailed)
    assert len(ok.chunks[TILE]) == 1 and ok.chunks[TILE][0].shape == (4, 3, 4 * TILE, 4 * TILE)


def test_close_finishes_queued_work_then_refuses(backend):
    async def main():
        batcher = make(backend.run, max_batch_tiles=2, max_wait_ms=50)
        jobs = [submit(batcher, tiles(3, seed=i)) for i in range(4)]
        await batcher.close(10)
        assert all(job.future.done() and not job.future.exception() for job in jobs)
        with pytest.raises(Draining):
            batcher.admit(1)

    asyncio.run(main())


def test_tiles_go_in_batches_of_one_size_oldest_job_first(model_set):
    async def main():
        recorder = Recorder(model_set)
        limits = model_set.info.batch_limits(8)
        assert limits == {TILE: 8, 2 * TILE: 2}
        batcher = Batcher(recorder, tile_size=TILE, batch_limits=limits, max_wait_ms=20, max_queue_tiles=64)
        batcher.start()
        requests = [
            {TILE: tiles(3, seed=1), 2 * TILE: tiles(1, seed=2, size=2 * TILE)},
            {2 * TILE: tiles(3, seed=3, size=2 * TILE)},
            {TILE: tiles(6, seed=4)},
        ]
        jobs = []
        for request in requests:
            work = sum(len(batch.lq) * (batch.lq.shape[-1] // TILE) ** 2 for batch in request.values())
            jobs.append(batcher.submit(batcher.admit(work), request, time.perf_counter() + 30))
        assert batcher.queued_tiles == 3 + 4 + 12 + 6  # a tile of 16 counts four tiles of 8
        results = await asyncio.gather(*(job.future for job in jobs))
        for request, result in zip(requests, results, strict=True):
            for size, batch in request.items():
                np.testing.assert_allclose(
                    np.concatenate(result.chunks[size]), model_set.run(*batch), atol=1e-6
                )
        await batcher.close(5)
        return list(zip(recorder.sizes, recorder.batches, strict=True))

    # The first job's size 8, then its size 16 (older than the third job's 8 tiles), then the second job.
    assert asyncio.run(main()) == [(TILE, 8), (2 * TILE, 2), (2 * TILE, 2), (TILE, 1)]


def test_the_queue_and_the_metrics_count_tiles_by_area(model_set):
    async def main():
        metrics = Metrics()
        batcher = Batcher(
            model_set.run,
            tile_size=TILE,
            batch_limits=model_set.info.batch_limits(8),
            max_wait_ms=1,
            max_queue_tiles=8,
            metrics=metrics,
        )
        batcher.start()
        job = batcher.submit(batcher.admit(4), {2 * TILE: tiles(1, size=2 * TILE)}, time.perf_counter() + 30)
        with pytest.raises(Overloaded):
            batcher.admit(5)
        await job.future
        await batcher.close(5)
        return metrics.tiles._value.get(), metrics.queue_tiles._value.get()

    assert asyncio.run(main()) == (4, 0)
