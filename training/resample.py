"""torch's bicubic resamplers and a Gaussian blur as small separable convolutions with constant taps.

The LR corrector (training/models/corrector.py) runs these inside every exported graph: as convolutions a
graph of any tile size carries a few hundred bytes for them (matrices would cost megabytes per tile size),
and the service's tiles compute what `rsd eval` does.

    downscale: `F.interpolate(mode="bicubic", antialias=True)` x1/f exactly, taps renormalised at the
               borders as torch does
    blur:      Gaussian of sigma pixels, radius ceil(3 sigma), renormalised at the borders
    upscale:   `F.interpolate(mode="bicubic", align_corners=False)` xf exactly, border taps clamped as
               torch does
    upscale_average: `F.avg_pool2d(upscale(x, f), f)` as one 5-tap filter at the input's resolution

The autoencoders use them too (their resampling bypasses and ResShift's bicubic condition), so training,
export and service share one definition of each resampler.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def cubic_kernel(d: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel at distances d (a = -0.75: torch's and OpenCV's bicubic; -0.5: torch's
    antialiased downscale, as PIL)."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,H/f,W/f): antialiased bicubic, torch's a = -0.5 kernel stretched by f."""
    taps = _downscale_taps(factor)  # 4f taps; output i reads inputs f*i - (2f - 2) ... f*i + 2f + 1
    return _normalised_conv(x, taps, stride=factor)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,h,w); sigma = 0 returns x."""
    if sigma == 0:
        return x
    return _normalised_conv(x, _gaussian_taps(sigma), stride=1)


def upscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,fh,fw): bicubic as f phases of a 5-tap filter per axis, then interleaved."""
    c, h, w = (int(size) for size in x.shape[1:])  # fixed per graph; the batch stays dynamic (-1)
    phases = _upscale_phases(factor)  # (f, 5)
    y = _replicate_conv(x, phases, axis=2)  # (B,C*f,h,w)
    y = y.reshape(-1, c, factor, h, w).permute(0, 1, 3, 2, 4).reshape(-1, c, h * factor, w)
    y = _replicate_conv(y, phases, axis=3)  # (B,C*f,fh,w)
    y = y.reshape(-1, c, factor, h * factor, w).permute(0, 1, 3, 4, 2)  # (B,C,fh,w,f)
    return y.reshape(-1, c, h * factor, w * factor)


def upscale_average(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,h,w): the mean of each f x f block of `upscale(x, f)`. Both are linear and
    separable, so the average of the f phases is one 5-tap filter per axis on the replicate-padded input."""
    taps = _upscale_phases(factor).mean(axis=0, keepdims=True)  # (1, 5)
    return _replicate_conv(_replicate_conv(x, taps, axis=2), taps, axis=3)


def _replicate_conv(x: torch.Tensor, taps: np.ndarray, axis: int) -> torch.Tensor:
    """(B,C,h,w) -> (B,C*K,h,w): each channel convolved with each of the K rows of taps (K, 5) along axis
    (2: height, 3: width), the border pixels repeated as torch's bicubic clamps its taps."""
    c = int(x.shape[1])
    weight = torch.from_numpy(taps).to(x).repeat(c, 1)  # (C*K, 5)
    if axis == 2:
        return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), weight[:, None, :, None], groups=c)
    return F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), weight[:, None, None, :], groups=c)


def _normalised_conv(x: torch.Tensor, taps: np.ndarray, stride: int) -> torch.Tensor:
    """Separable depthwise convolution with zero padding, each output divided by the sum of the taps that
    fell inside the image: the truncated, renormalised kernel torch uses at borders."""
    c, h, w = (int(size) for size in x.shape[1:])  # the tracer's sizes: spatial ones are fixed per graph
    pad = (len(taps) - stride) // 2
    kernel = torch.from_numpy(taps).to(x)
    y = F.conv2d(x, kernel.repeat(c, 1)[:, None, :, None], stride=(stride, 1), padding=(pad, 0), groups=c)
    y = F.conv2d(y, kernel.repeat(c, 1)[:, None, None, :], stride=(1, stride), padding=(0, pad), groups=c)
    norm_h = torch.from_numpy(_inside_sums(h, taps, stride)).to(x)  # (h/stride,)
    norm_w = torch.from_numpy(_inside_sums(w, taps, stride)).to(x)  # (w/stride,)
    return y / norm_h[:, None] / norm_w


@functools.lru_cache(maxsize=16)
def _downscale_taps(factor: int) -> np.ndarray:
    offsets = np.arange(4 * factor) - (2 * factor - 2)  # input index - f*i
    return cubic_kernel((offsets - (factor - 1) / 2) / factor, a=-0.5).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = math.ceil(3 * sigma)
    return np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _upscale_phases(factor: int) -> np.ndarray:
    """(f, 5): output pixel f*i + p reads inputs i-2 ... i+2 at source coordinate i + (2p + 1 - f) / 2f."""
    shift = (2 * np.arange(factor) + 1 - factor) / (2 * factor)
    return cubic_kernel(shift[:, None] - np.arange(-2, 3)[None, :]).astype(np.float32)


def _inside_sums(n: int, taps: np.ndarray, stride: int) -> np.ndarray:
    pad = (len(taps) - stride) // 2
    index = np.arange(0, n, stride)[:, None] - pad + np.arange(len(taps))[None, :]  # (n/stride, taps)
    inside = (index >= 0) & (index < n)
    return (inside * taps[None, :]).sum(axis=1).astype(np.float32)
