"""PyTorch backend: the fused student module on a GPU in fp16 with CUDA graphs.

Imported only when `RSD_BACKEND=torch`, so the default install stays torch-free. This is the GPU path
that works without TensorRT. One CUDA graph is captured per batch bucket (powers of two up to
max_batch_tiles); a batch is padded to the next bucket, as TGI does with its `--cuda-graphs` sizes.
On a CPU-only host it runs the module eagerly in fp32. The model directory is loaded by
model_export.fused.load_fused_module, which places the module on the device in the chosen dtype.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from service.backends.base import BackendError, ModelInfo


def _buckets(max_batch: int) -> list[int]:
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return [*sizes, max_batch]


class TorchBackend:
    def __init__(
        self,
        module: torch.nn.Module,
        metadata: Mapping[str, str],
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int,
        name: str = "fused",
    ):
        """`module` is already on `device` in `dtype` (the loader keeps some weights in fp32)."""
        self.device, self.dtype = device, dtype
        self.module = module.eval()
        self.info = ModelInfo.from_metadata(
            metadata,
            backend=f"torch ({device.type})",
            default_name=name,
            tile_from_shape=None,
            precision={torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype],
            max_batch=None,
        )
        # bucket size -> (graph, static inputs, static output)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        if self.device.type == "cuda":
            self._capture(_buckets(max_batch))

    @classmethod
    def from_model_dir(cls, model_dir: Path, *, max_batch: int) -> "TorchBackend":
        """From the training side: `model_export.fused.load_fused_module(dir) -> (module, rsd.* metadata)`."""
        try:
            from model_export.fused import load_fused_module
        except ImportError:
            raise BackendError(
                "the torch backend needs model_export.fused.load_fused_module, which this install lacks"
            ) from None
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        module, metadata = load_fused_module(model_dir, device=device, dtype=dtype)
        return cls(module, metadata, device=device, dtype=dtype, max_batch=max_batch, name=model_dir.name)

    @torch.inference_mode()
    def _capture(self, sizes: list[int]) -> None:
        t, s = self.info.tile_size, self.info.scale
        pool = torch.cuda.graph_pool_handle()
        for size in sorted(sizes, reverse=True):  # largest first, the smaller ones reuse its memory pool
            static = [
                torch.zeros((size, c, t, t), device=self.device, dtype=self.dtype) for c in (3, 3, 1)
            ]  # lq, noise_prior, noise_student
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm up kernels and autotuning outside the capture
                    self.module(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = self.module(*static)
            if tuple(out.shape) != (size, 3, s * t, s * t):
                raise BackendError(
                    f"fused module returned {tuple(out.shape)} for a batch of {size} tiles of {t}"
                )
            self._graphs[size] = (graph, static, out)

    @torch.inference_mode()
    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        b = lq.shape[0]
        inputs = [torch.from_numpy(a).to(self.device, self.dtype) for a in (lq, noise_prior, noise_student)]
        if self._graphs:
            bucket = min(size for size in self._graphs if size >= b)
            graph, static, out = self._graphs[bucket]
            for dst, src in zip(static, inputs, strict=True):
                dst[:b].copy_(src)  # rows past b keep stale data; their outputs are ignored
            graph.replay()
            sr = out[:b]
        else:
            sr = self.module(*inputs)
        return sr.float().clamp_(0.0, 1.0).cpu().numpy()

    def close(self) -> None:
        self._graphs.clear()
