"""TensorRT backend: a serialized engine built for this GPU (TensorRT 10 Python API).

Imported only when `RSD_BACKEND=tensorrt`. Device buffers are torch CUDA tensors (torch comes with the
GPU image anyway). An engine carries no ONNX metadata, so the `rsd.*` metadata of the ONNX it was
built from is read from a JSON file next to it (`model.plan` -> `model.json`).
"""

import json
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from rsd import contract
from service.backends.base import BackendError, ModelInfo

_INPUTS = (contract.INPUT_LQ, contract.INPUT_NOISE_PRIOR, contract.INPUT_NOISE_STUDENT)


class TensorRTBackend:
    def __init__(self, engine_path: Path):
        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA GPU")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT cannot deserialize {engine_path} (built for another GPU or version?)"
            )
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if not {*_INPUTS, contract.OUTPUT_SR} <= names:
            raise BackendError(
                f"{engine_path} does not follow the graph contract; its tensors are {sorted(names)}"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._dtypes = {
            name: torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            for name in (*_INPUTS, contract.OUTPUT_SR)
        }
        _, _, tile, _ = self.engine.get_tensor_shape(contract.INPUT_LQ)  # (-1, 3, t, t)
        _, _, max_shape = self.engine.get_tensor_profile_shape(contract.INPUT_LQ, 0)  # (min, opt, max)
        sidecar = engine_path.with_suffix(".json")
        metadata = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        precision = "fp16" if self._dtypes[contract.INPUT_LQ] == torch.float16 else "fp32"
        self.info = ModelInfo.from_metadata(
            metadata,
            backend="tensorrt",
            default_name=engine_path.stem,
            tile_from_shape=tile,
            precision=precision,
            max_batch=max_shape[0],
        )

    def run(self, lq: np.ndarray, noise_prior: np.ndarray, noise_student: np.ndarray) -> np.ndarray:
        b, s, t = lq.shape[0], self.info.scale, self.info.tile_size
        with torch.cuda.stream(self.stream):
            buffers = []  # keep the inputs alive until the stream has run
            for name, array in zip(_INPUTS, (lq, noise_prior, noise_student), strict=True):
                tensor = torch.from_numpy(array).to("cuda", self._dtypes[name])
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
                buffers.append(tensor)
            sr = torch.empty((b, 3, s * t, s * t), dtype=self._dtypes[contract.OUTPUT_SR], device="cuda")
            self.context.set_tensor_address(contract.OUTPUT_SR, sr.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            result = sr.float().clamp_(0.0, 1.0).cpu()  # .cpu() waits for this stream
        return result.numpy()

    def close(self) -> None:
        del self.context, self.engine
