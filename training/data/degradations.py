"""LR synthesis for x4 super-resolution, in three modes and their mixture:

    clean       antialiased bicubic x4 down (what a merely small photo looks like)
    mild        light blur -> bicubic x4 down -> light Gaussian noise -> JPEG 75-95 (a phone photo
                shared once: MildConfig gives the ranges)
    realesrgan  the Real-ESRGAN second-order pipeline below (heavily degraded inputs)
    a mixture   {mode: probability}, drawn per sample, as BSRGAN / Real-ESRGAN users train for the range
                of inputs a service meets (`make_lr`)

The Real-ESRGAN pipeline (PAPER.md section 7, REFERENCE_CODE.md section 2.5) turns a batch of clean HR
crops into realistic LR inputs:

    stage 1:  blur (kernel1) -> random resize -> Gaussian/Poisson noise -> JPEG
    stage 2:  (p=0.5) blur (kernel2, p=0.8) -> resize to HR/4 * s -> Gaussian/Poisson noise
    final:    (p=0.5) resize to HR/4 + sinc -> JPEG   or   JPEG -> resize to HR/4 + sinc
    output:   round(clamp(x, 0, 1) * 255) / 255

It works on whole batches with torch ops on the batch's device, so it runs on the GPU during training; the
JPEG step is a batched torch codec (8x8 DCT, YCbCr 4:2:0, IJG quantisation tables) rather than a PIL
round trip. Blur kernels are small, so they are drawn per sample with numpy on the CPU. Choices that change
the tensor shape (resize factor and mode, whether stage 2 runs, the final order) are drawn once per batch,
as in the reference trainer; everything else (kernels, noise kind and strength, JPEG quality) per sample.
Every random draw comes from the `torch.Generator` passed in, so a seed reproduces a batch exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import scipy.special
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------
# Configuration (defaults = the official ResShift / SinSR / RSD training configs)

LR_MODES = ("clean", "mild", "realesrgan")
KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class StageConfig:
    """Random ranges for one degradation order. Ranges are (low, high) and drawn uniformly."""

    kernel_sizes: tuple[int, ...]  # odd sizes the blur kernel is drawn from
    kernel_pad: int  # every kernel is zero-padded to this size so a batch stacks
    blur_sigma: tuple[float, float]
    resize_probs: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]  # up: U[1, high], down: U[low, 1]
    noise_range: tuple[float, float]  # Gaussian sigma, in 8-bit levels
    poisson_scale_range: tuple[float, float]
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over KERNEL_KINDS
    sinc_prob: float = 0.1
    betag_range: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian shape
    betap_range: tuple[float, float] = (1.0, 2.0)  # plateau shape
    gaussian_noise_prob: float = 0.5  # else Poisson
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)  # stage 1: its JPEG; stage 2: the final JPEG


def _stage1() -> StageConfig:
    return StageConfig(
        kernel_sizes=tuple(range(3, 21, 2)),
        kernel_pad=21,
        blur_sigma=(0.2, 3.0),
        resize_probs=(0.2, 0.7, 0.1),
        resize_range=(0.15, 1.5),
        noise_range=(1.0, 30.0),
        poisson_scale_range=(0.05, 3.0),
    )


def _stage2() -> StageConfig:
    return StageConfig(
        kernel_sizes=tuple(range(3, 15, 2)),
        kernel_pad=15,
        blur_sigma=(0.2, 1.5),
        resize_probs=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class MildConfig:
    """The `mild` mode's ranges, each drawn uniformly per sample (JPEG quality as an integer)."""

    blur_sigma: tuple[float, float] = (0.2, 1.2)  # isotropic Gaussian, HR pixels
    kernel_size: int = 11  # covers +-4 sigma of the widest blur
    noise_sigma: tuple[float, float] = (0.0, 5.0)  # Gaussian, 8-bit levels, per channel
    jpeg_range: tuple[int, int] = (75, 95)


@dataclass(frozen=True)
class DegradationConfig:
    scale: int = 4
    stage1: StageConfig = field(default_factory=_stage1)
    stage2: StageConfig = field(default_factory=_stage2)
    mild: MildConfig = field(default_factory=MildConfig)
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8  # else the final "sinc" is an identity pulse
    final_kernel_pad: int = 15
    resize_first_prob: float = 0.5  # final order: [resize + sinc -> JPEG] vs [JPEG -> resize + sinc]
    resize_modes: tuple[str, ...] = RESIZE_MODES

    @classmethod
    def from_dict(cls, d: dict) -> DegradationConfig:
        """Defaults overridden by a (YAML-style) dict; `stage1`/`stage2`/`mild` may override single fields."""
        top = {f.name for f in fields(cls)}
        unknown = set(d) - top
        if unknown:
            raise ValueError(f"unknown degradation options: {sorted(unknown)}")
        base = cls()
        nested = ("stage1", "stage2", "mild")
        out = {k: _tuples(v) for k, v in d.items() if k not in nested}
        for k in nested:
            if k in d:
                out[k] = replace(getattr(base, k), **{sk: _tuples(sv) for sk, sv in d[k].items()})
        return replace(base, **out)


def _tuples(v):
    return tuple(v) if isinstance(v, list) else v


# ----------------------------------------------------------------------------------------------------------
# Blur kernels (numpy, one per sample)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(ax, ax)  # x varies along columns, y along rows


def anisotropic_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0, shape: str = "gaussian"
) -> np.ndarray:
    """Bivariate kernel with covariance R diag(sx^2, sy^2) R^T; `shape` picks the radial profile of the
    quadratic form q = x^T C^-1 x: gaussian exp(-q/2), generalized exp(-q^beta/2), plateau 1/(1+q^beta)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T)
    xx, yy = _grid(size)
    q = inv[0, 0] * xx**2 + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy**2
    if shape == "gaussian":
        k = np.exp(-0.5 * q)
    elif shape == "generalized":
        k = np.exp(-0.5 * q**beta)
    elif shape == "plateau":
        k = 1.0 / (1.0 + q**beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return k / k.sum()


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Circular low-pass filter with cutoff omega_c (rad/pixel): 2-D ideal filter truncated to size x size,
    h(r) = omega_c J1(omega_c r) / (2 pi r), h(0) = omega_c^2 / (4 pi). Models ringing/overshoot."""
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    safe_r = np.where(r == 0, 1.0, r)
    k = np.where(
        r == 0,
        omega_c**2 / (4 * math.pi),
        omega_c * scipy.special.j1(omega_c * safe_r) / (2 * math.pi * safe_r),
    )
    return k / k.sum()


def pad_kernel(k: np.ndarray, size: int) -> np.ndarray:
    p = (size - k.shape[0]) // 2
    return np.pad(k, p)


def pulse_kernel(size: int) -> np.ndarray:
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def _draw_beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Shape parameter; when the range straddles 1 (the Gaussian), heavier and lighter tails are equally
    likely instead of in proportion to the two sub-ranges' lengths."""
    if lo < 1.0 < hi:
        return rng.uniform(lo, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, hi)
    return rng.uniform(lo, hi)


def random_blur_kernel(rng: np.random.Generator, stage: StageConfig) -> np.ndarray:
    """One stage blur kernel, (kernel_pad, kernel_pad), sums to 1: sinc with prob sinc_prob, else one of the
    six Gaussian-family kernels with prob kernel_probs."""
    size = int(rng.choice(stage.kernel_sizes))
    if rng.random() < stage.sinc_prob:
        omega_c = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return pad_kernel(sinc_kernel(size, omega_c), stage.kernel_pad)
    kind = KERNEL_KINDS[rng.choice(len(KERNEL_KINDS), p=np.asarray(stage.kernel_probs))]
    sigma_x = rng.uniform(*stage.blur_sigma)
    if kind.endswith("aniso"):
        sigma_y, theta = rng.uniform(*stage.blur_sigma), rng.uniform(-math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    if kind.startswith("generalized"):
        shape, beta = "generalized", _draw_beta(rng, *stage.betag_range)
    elif kind.startswith("plateau"):
        shape, beta = "plateau", _draw_beta(rng, *stage.betap_range)
    else:
        shape, beta = "gaussian", 1.0
    return pad_kernel(anisotropic_kernel(size, sigma_x, sigma_y, theta, beta, shape), stage.kernel_pad)


def random_final_kernel(rng: np.random.Generator, cfg: DegradationConfig) -> np.ndarray:
    """The last filter: sinc (omega_c in [pi/3, pi], size from stage 2's sizes) or an identity pulse."""
    if rng.random() < cfg.final_sinc_prob:
        size = int(rng.choice(cfg.stage2.kernel_sizes))
        return pad_kernel(sinc_kernel(size, rng.uniform(math.pi / 3, math.pi)), cfg.final_kernel_pad)
    return pulse_kernel(cfg.final_kernel_pad)


# ----------------------------------------------------------------------------------------------------------
# Batched torch ops


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample 2-D filter: x (B,C,H,W), kernels (B,K,K) -> (B,C,H,W). Reflect padding (replicate when the
    image is smaller than the kernel radius). Kernels are point-symmetric, so correlation = convolution."""
    b, c, h, w = x.shape
    p = kernels.shape[-1] // 2
    x = F.pad(x, (p, p, p, p), mode="reflect" if p < h and p < w else "replicate")
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, K, K)
    out = F.conv2d(x.reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c)
    return out.reshape(b, c, h, w)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return F.interpolate(x, size=size, mode=mode, align_corners=None if mode == "area" else False)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W), ITU-R BT.601 weights."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def add_noise(
    x: torch.Tensor,
    gaussian: torch.Tensor,
    sigma: torch.Tensor,
    poisson_scale: torch.Tensor,
    gray: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per sample either Gaussian noise (std sigma, [0,1] units) or Poisson (shot) noise at 8-bit photon
    counts times poisson_scale; gray noise is the same field on all three channels. All (B,) tensors; both
    noises are drawn for every sample so the random stream does not depend on the choices."""
    b, _, h, w = x.shape
    dev = x.device
    view = (b, 1, 1, 1)
    gray = gray.view(view)
    g_rgb = torch.randn((b, 3, h, w), generator=generator, device=dev)
    g_gray = torch.randn((b, 1, h, w), generator=generator, device=dev).expand(b, 3, h, w)
    noise_g = torch.where(gray, g_gray, g_rgb) * sigma.view(view)
    xc = x.clamp(0, 1)
    yc = luma(xc)
    p_rgb = torch.poisson(xc * 255, generator=generator) / 255 - xc
    p_gray = (torch.poisson(yc * 255, generator=generator) / 255 - yc).expand(b, 3, h, w)
    noise_p = torch.where(gray, p_gray, p_rgb) * poisson_scale.view(view)
    return (x + torch.where(gaussian.view(view), noise_g, noise_p)).clamp(0, 1)


# --- JPEG (baseline, 4:2:0), batched -----------------------------------------------------------------------

# ITU-T T.81 Annex K example quantisation tables (the ones libjpeg scales by quality).
_LUMA_Q = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
]
_CHROMA_Q = [
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
]


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IJG quality scaling: (B,) integer qualities in [1, 100] -> luma and chroma tables, each (B,8,8)."""
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q).view(-1, 1, 1)

    def scaled(table):
        t = torch.tensor(table, dtype=torch.float64, device=quality.device)
        return torch.floor((t * scale + 50) / 100).clamp(1, 255).float()

    return scaled(_LUMA_Q), scaled(_CHROMA_Q)


def _dct_matrix(device) -> torch.Tensor:
    """Orthonormal 8-point DCT-II: D[u, x] = a(u) cos((2x+1) u pi / 16); JPEG's FDCT is D X D^T."""
    u = torch.arange(8, dtype=torch.float64).view(8, 1)
    x = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = math.sqrt(1 / 8)
    return d.float().to(device)


def _quantize_blocks(v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level-shifted samples v (B,C,H,W), H and W multiples of 8 -> DCT, quantise with table (B,8,8),
    dequantise, inverse DCT, back to (B,C,H,W)."""
    b, c, h, w = v.shape
    d = _dct_matrix(v.device)
    blocks = v.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4)  # (B,C,h/8,w/8,8,8)
    coef = d @ blocks @ d.T
    t = table.view(b, 1, 1, 1, 8, 8)
    coef = torch.round(coef / t) * t
    blocks = d.T @ coef @ d
    return blocks.transpose(3, 4).reshape(b, c, h, w)


def jpeg(x: torch.Tensor, quality: torch.Tensor | int) -> torch.Tensor:
    """Baseline JPEG round trip of a batch, like libjpeg with 4:2:0 chroma: x (B,3,H,W) in [0,1], quality
    (B,) ints or one int -> decoded (B,3,H,W) in [0,1] on 8-bit levels. Not differentiable (rounding)."""
    b, _, h, w = x.shape
    quality = torch.as_tensor(quality, device=x.device).expand(b)
    qy, qc = quant_tables(quality)
    # Encoder: 8-bit RGB, edges replicated to whole 16x16 MCUs, full-range BT.601 YCbCr.
    ph, pw = -h % 16, -w % 16
    rgb = F.pad(torch.round(x.clamp(0, 1) * 255), (0, pw, 0, ph), mode="replicate")
    r, g, bl = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    y = torch.round(y)
    cbcr = torch.round(F.avg_pool2d(torch.cat([cb, cr], dim=1), 2))  # 2x2 chroma subsampling
    # Lossy part, then the decoder: rounded 8-bit planes, "fancy" (triangle = bilinear) chroma upsampling.
    y = (torch.round(_quantize_blocks(y - 128, qy)) + 128).clamp(0, 255)
    cbcr = (torch.round(_quantize_blocks(cbcr - 128, qc)) + 128).clamp(0, 255)
    cbcr = F.interpolate(cbcr, scale_factor=2, mode="bilinear", align_corners=False) - 128
    cb, cr = cbcr[:, 0:1], cbcr[:, 1:2]
    out = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return torch.round(out.clamp(0, 255))[:, :, :h, :w] / 255


# ----------------------------------------------------------------------------------------------------------
# Pipelines


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def bicubic_degradation(hr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """The `clean` mode: antialiased bicubic x`scale` downsample, on 8-bit levels. hr (B,3,H,W) in [0,1]."""
    return quantize_8bit(_bicubic_down(hr, scale))


def _bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
    )


def mild_degradation(hr: torch.Tensor, generator: torch.Generator, config: DegradationConfig) -> torch.Tensor:
    """The `mild` mode: per sample a Gaussian blur, bicubic down, Gaussian noise and a JPEG round trip with
    the ranges of config.mild; hr (B,3,H,W) in [0,1] -> (B,3,H/s,W/s) on 8-bit levels."""
    cfg, b = config.mild, hr.shape[0]
    rng = numpy_rng(generator)
    sigmas = rng.uniform(*cfg.blur_sigma, size=b)
    kernels = np.stack([anisotropic_kernel(cfg.kernel_size, s, s, 0.0) for s in sigmas])
    x = _bicubic_down(filter2d(hr.float(), torch.from_numpy(kernels).float()), config.scale)
    noise_sigma = torch.as_tensor(rng.uniform(*cfg.noise_sigma, size=b) / 255, device=hr.device).float()
    noise = torch.randn(x.shape, generator=generator, device=hr.device) * noise_sigma.view(b, 1, 1, 1)
    quality = torch.as_tensor(
        rng.integers(cfg.jpeg_range[0], cfg.jpeg_range[1] + 1, size=b), device=hr.device
    )
    return quantize_8bit(jpeg((x + noise).clamp(0, 1), quality))


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from a torch generator (one draw), for the CPU-side parameter draws."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item()
    return np.random.default_rng(seed)


class RealESRGANDegradation:
    """Real-ESRGAN second-order degradation on batches: hr (B,3,H,W) in [0,1] -> lr (B,3,H/s,W/s) in [0,1]
    on 8-bit levels, computed on hr.device. `generator` must live on the same device as hr."""

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig()

    def _scale(self, rng: np.random.Generator, stage: StageConfig) -> float:
        kind = rng.choice(3, p=np.asarray(stage.resize_probs))
        lo, hi = stage.resize_range
        return (rng.uniform(1.0, hi), rng.uniform(lo, 1.0), 1.0)[kind]

    def _resize(self, x: torch.Tensor, size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
        mode = self.config.resize_modes[rng.choice(len(self.config.resize_modes))]
        return resize(x, (max(1, size[0]), max(1, size[1])), mode)

    def _kernels(self, rng: np.random.Generator, b: int, draw) -> torch.Tensor:
        return torch.from_numpy(np.stack([draw(rng) for _ in range(b)])).float()

    def _noise(self, x, rng, stage: StageConfig, generator) -> torch.Tensor:
        b = x.shape[0]

        def t(a):
            return torch.as_tensor(a, device=x.device)

        return add_noise(
            x,
            gaussian=t(rng.random(b) < stage.gaussian_noise_prob),
            sigma=t(rng.uniform(*stage.noise_range, size=b) / 255).float(),
            poisson_scale=t(rng.uniform(*stage.poisson_scale_range, size=b)).float(),
            gray=t(rng.random(b) < stage.gray_noise_prob),
            generator=generator,
        )

    def _jpeg(self, x, rng, stage: StageConfig) -> torch.Tensor:
        lo, hi = stage.jpeg_range
        return jpeg(x, torch.as_tensor(rng.integers(lo, hi + 1, size=x.shape[0]), device=x.device))

    @torch.no_grad()
    def __call__(self, hr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        s1, s2 = cfg.stage1, cfg.stage2
        b, _, h, w = hr.shape
        rng = numpy_rng(generator)

        # Stage 1: blur -> resize (relative to the HR size) -> noise -> JPEG. fp32 throughout: the 8-bit
        # rounding steps are meaningless in half precision.
        x = filter2d(hr.float(), self._kernels(rng, b, lambda r: random_blur_kernel(r, s1)))
        f = self._scale(rng, s1)
        x = self._resize(x, (int(h * f), int(w * f)), rng)
        x = self._noise(x, rng, s1, generator)
        x = self._jpeg(x, rng, s1)

        # Stage 2: blur (per sample, p=second_blur_prob) -> resize around the LR size -> noise.
        if rng.random() < cfg.second_order_prob:
            pulse = pulse_kernel(s2.kernel_pad)
            k2 = self._kernels(
                rng, b, lambda r: random_blur_kernel(r, s2) if r.random() < cfg.second_blur_prob else pulse
            )
            x = filter2d(x, k2)
            f = self._scale(rng, s2)
            x = self._resize(x, (int(h / cfg.scale * f), int(w / cfg.scale * f)), rng)
            x = self._noise(x, rng, s2, generator)

        # Final: resize to the LR size + sinc, and the last JPEG, in random order.
        lr_size = (h // cfg.scale, w // cfg.scale)
        k3 = self._kernels(rng, b, lambda r: random_final_kernel(r, cfg))
        if rng.random() < cfg.resize_first_prob:
            x = filter2d(self._resize(x, lr_size, rng), k3)
            x = self._jpeg(x, rng, s2)
        else:
            x = self._jpeg(x, rng, s2)
            x = filter2d(self._resize(x, lr_size, rng), k3)
        return quantize_8bit(x)


def check_lr_mode(mode: str | dict[str, float]) -> None:
    """Raise ValueError unless mode is one of LR_MODES or a mixture {mode: weight >= 0} with a positive sum
    (trainers call it at start-up, so a typo fails before the first step)."""
    if isinstance(mode, dict):
        weights = list(mode.values())
        if (
            set(mode) - set(LR_MODES)
            or not all(isinstance(w, int | float) and w >= 0 for w in weights)
            or (sum(weights) <= 0)
        ):
            raise ValueError(f"an LR mixture maps modes of {LR_MODES} to non-negative weights, got {mode}")
    elif mode not in LR_MODES:
        raise ValueError(f"unknown LR mode {mode!r}; expected one of {LR_MODES} or a mixture of them")


def build_degradation(mode: str | dict[str, float], overrides: dict) -> RealESRGANDegradation:
    """A trainer's LR synthesis: its config's `lr_mode` checked and `degradation` overrides applied."""
    check_lr_mode(mode)
    return RealESRGANDegradation(DegradationConfig.from_dict(overrides))


def make_lr(
    hr: torch.Tensor,
    mode: str | dict[str, float],
    degradation: RealESRGANDegradation | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """LR batch for a HR batch (B,3,H,W) in [0,1], H and W multiples of 4. `mode` is one of LR_MODES or a
    mixture {mode: probability} drawn per sample; every mode but 'clean' needs a generator on hr.device.
    The degradation's config (default DegradationConfig) gives the scale and every random range."""
    return make_lr_with_modes(hr, mode, degradation, generator)[0]


def make_lr_with_modes(
    hr: torch.Tensor,
    mode: str | dict[str, float],
    degradation: RealESRGANDegradation | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """`make_lr` and the mode each sample drew (for losses weighted by mode)."""
    check_lr_mode(mode)
    degradation = degradation or RealESRGANDegradation()
    config = degradation.config
    if isinstance(mode, dict):
        return _mixture(hr, mode, degradation, generator)
    modes = (mode,) * hr.shape[0]
    if mode == "clean":
        return bicubic_degradation(hr, scale=config.scale), modes
    if generator is None:
        raise ValueError(f"mode {mode!r} needs a torch.Generator (on the HR batch's device)")
    if mode == "mild":
        return mild_degradation(hr, generator, config), modes
    return degradation(hr, generator), modes


def _mixture(
    hr: torch.Tensor,
    weights: dict[str, float],
    degradation: RealESRGANDegradation,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Each sample's mode drawn with probability weights[mode] (normalised), then each mode run once on the
    samples that drew it, in LR_MODES order (so the random stream is a function of the generator alone)."""
    if generator is None:
        raise ValueError("an LR mixture needs a torch.Generator (on the HR batch's device)")
    probs = np.array([float(weights.get(m, 0.0)) for m in LR_MODES])
    picks = torch.from_numpy(
        numpy_rng(generator).choice(len(LR_MODES), size=hr.shape[0], p=probs / probs.sum())
    )
    s = degradation.config.scale
    out = hr.new_empty((hr.shape[0], 3, hr.shape[2] // s, hr.shape[3] // s))
    for i, m in enumerate(LR_MODES):
        idx = (picks == i).nonzero().flatten().to(hr.device)
        if len(idx):
            out[idx] = make_lr(hr[idx], m, degradation, generator)
    return out, tuple(LR_MODES[i] for i in picks.tolist())
