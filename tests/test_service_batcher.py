"""The dynamic batcher against the real ONNX Runtime backend, one test per edge case."""

import asyncio
import time

import numpy as np
import pytest

from service.backends.onnxruntime import OnnxRuntimeBackend
from service.batcher import Batcher
from service.errors import DeadlineExceeded, Draining, InferenceFailed, Overloaded, PayloadTooLarge
from service.metrics import Metrics
from tests.onnx_fixture import build_fixture_model

TILE = 8


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OnnxRuntimeBackend(
        build_fixture_model(tmp_path_factory.mktemp("m") / "m.onnx", tile=TILE), threads=1
    )


class Recorder:
    """Wraps the real backend's run to see what reaches the model; poisoned tiles (lq < 0) fail the batch."""

    def __init__(self, backend):
        self.backend = backend
        self.batches: list[int] = []

    def __call__(self, lq, prior, student):
        self.batches.append(lq.shape[0])
        if (lq < 0).any():
            raise RuntimeError("poisoned batch")
        return self.backend.run(lq, prior, student)


def tiles(n, seed=0, value=None):
    rng = np.random.default_rng(seed)
    lq = (
        rng.random((n, 3, TILE, TILE), dtype=np.float32)
        if value is None
        else np.full((n, 3, TILE, TILE), value, np.float32)
    )
    return (
        lq,
        rng.standard_normal((n, 3, TILE, TILE), dtype=np.float32),
        rng.standard_normal((n, 1, TILE, TILE), dtype=np.float32),
    )


def submit(batcher, arrays, deadline_s=30.0):
    return batcher.submit(batcher.admit(arrays[0].shape[0]), *arrays, time.perf_counter() + deadline_s)


def make(run, metrics=None, **kw):
    options = {"max_batch_tiles": 8, "max_wait_ms": 20, "max_queue_tiles": 64} | kw
    batcher = Batcher(run, metrics=metrics, **options)
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
            np.testing.assert_allclose(np.concatenate(result.chunks), backend.run(*arrays), atol=1e-6)
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
    assert len(ok.chunks) == 1 and ok.chunks[0].shape == (4, 3, 4 * TILE, 4 * TILE)


def test_close_finishes_queued_work_then_refuses(backend):
    async def main():
        batcher = make(backend.run, max_batch_tiles=2, max_wait_ms=50)
        jobs = [submit(batcher, tiles(3, seed=i)) for i in range(4)]
        await batcher.close(10)
        assert all(job.future.done() and not job.future.exception() for job in jobs)
        with pytest.raises(Draining):
            batcher.admit(1)

    asyncio.run(main())
