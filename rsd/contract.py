"""The fused-graph contract shared by export (torch side) and the service (torch-free).

One exported graph upscales one fixed-size LR tile: `lq` in [0, 1] plus the noise the one-step
student consumes, so outputs are reproducible from a seed. Latents of the VQ-f4 autoencoder have
the LR tile's spatial size (HR / 4), which is why both noise inputs are tile-sized.
"""

SCALE = 4
LATENT_CHANNELS = 3

INPUT_LQ = "lq"  # (B, 3, tile, tile) float32 in [0, 1]
INPUT_NOISE_PRIOR = (
    "noise_prior"  # (B, 3, tile, tile) float32 N(0, 1): the prior sample x_T = z_y + kappa*sqrt(eta_T)*noise
)
INPUT_NOISE_STUDENT = (
    "noise_student"  # (B, 1, tile, tile) float32 N(0, 1): the RSD student's extra input channel
)
OUTPUT_SR = "sr"  # (B, 3, 4*tile, 4*tile) float32 in [0, 1]

# ONNX metadata_props keys (all values are strings; *_json values are JSON documents).
META_NAME = "rsd.name"
META_VERSION = "rsd.version"
META_SCALE = "rsd.scale"
META_TILE = "rsd.tile_size"
META_PRECISION = "rsd.precision"
META_SCHEDULE = "rsd.schedule_json"
META_CONFIG_HASH = "rsd.config_hash"
META_TRAINING = "rsd.training_json"

DEFAULT_TILE = 64
