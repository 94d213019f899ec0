"""Every knob of the service in one place: environment variables with the `RSD_` prefix."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import defaults


class Settings(BaseSettings):
    """Service settings; `RSD_MAX_BATCH_TILES=16` sets `max_batch_tiles`, and so on."""

    model_config = SettingsConfigDict(env_prefix="RSD_", extra="ignore", protected_namespaces=())

    # Model and backend.
    model_path: Path = Field(
        defaults.MODEL_PATH,
        description="ONNX file (onnxruntime), TensorRT engine (tensorrt), a set of either for several tile "
        "sizes (.json manifest, service/backends/model_set.py) or model directory (torch).",
    )
    backend: Literal["onnxruntime", "tensorrt", "torch"] = "onnxruntime"
    threads: int = Field(
        defaults.THREADS, ge=0, description="Intra-op threads of the CPU backend; 0 lets it use every core."
    )
    cache_dir: Path = Field(
        default_factory=defaults.cache_dir,
        description="ONNX Runtime's optimised graphs, so later starts skip optimisation; safe to delete.",
    )

    # Batching and admission; the queue is counted in tiles, not requests, because tiles are the cost, and
    # in tiles of the model's tile size (128 for the default): a 256x256 tile counts 4, and a batch holds
    # the pixels of max_batch_tiles such tiles in any size (four of 128 = sixteen of 64 = one of 256).
    max_batch_tiles: int = Field(
        defaults.MAX_BATCH_TILES, ge=1, description="Most tiles the model runs in one batch."
    )
    max_wait_ms: float = Field(5.0, ge=0, description="How long an idle model waits for a fuller batch.")
    # 64: the default model serves about 1.1 tiles of 128x128 per second on 2 cores, so a full queue drains
    # in about the request timeout; a longer queue would answer 504 late where 429 now answers at once.
    max_queue_tiles: int = Field(
        64, ge=1, description="Tiles waiting for the model; more are refused with 429."
    )
    tile_overlap: int = Field(
        defaults.TILE_OVERLAP, ge=0, description="Overlap of neighbouring tiles in LR pixels."
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Deadline of one request; past it: 504.")

    # Input limits, checked before decoding.
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_input_pixels: int = Field(1024 * 1024, ge=1, description="Width x height of the input image.")

    # Optional bearer authentication for /v1/*: comma-separated keys.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # HTTP server and shutdown.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    drain_delay_s: float = Field(
        0.0, ge=0, description="After SIGTERM, keep accepting (answering 503) this long before closing."
    )
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Longest wait for in-flight requests at exit.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> "Settings":
        if self.max_queue_tiles < self.max_batch_tiles:
            raise ValueError("max_queue_tiles must be at least max_batch_tiles")
        return self
