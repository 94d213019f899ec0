"""Export: the fused one-step upscaler as ONNX (fp32/fp16), TensorRT engines and Triton repositories."""


class ExportError(RuntimeError):
    """An export that cannot go ahead. The message is one line; the CLI prints it and exits with
    `exit_code` (2: a missing tool, GPU or a bad option, so scripts can tell it from a failed build)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
