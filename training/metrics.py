"""Image quality metrics for x4 SR: PSNR / SSIM on the Y channel, LPIPS v0.1 and DISTS.

PSNR and SSIM follow the SR literature (MATLAB `rgb2ycbcr` luma, uint8 range, optional border crop). They take
one RGB image as a uint8 (H, W, 3) numpy array or a float (3, H, W) tensor in [0, 1]; tensors are quantised to
uint8 first, so scoring a tensor and scoring the PNG saved from it give the same number.

LPIPS (Zhang et al. 2018, v0.1) and DISTS (Ding et al. 2020) are differentiable `nn.Module`s with frozen
weights so they double as training losses. Their input conventions are the original ones: LPIPS takes
[-1, 1], DISTS takes [0, 1]; both take (B, 3, H, W) and return (B,) distances (0 for identical images).
Weights come from `training.pretrained` (ImageNet AlexNet / VGG16 features, LPIPS linear heads, DISTS
alpha/beta), converted once to safetensors. Neither resizes its inputs: the published reference values
are full-size scores.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from training import pretrained

# ------------------------------------------------------------------------------------------------------------
# PSNR / SSIM on Y


def _to_uint8_hwc(img: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise ValueError(
                f"expected a float (3, H, W) tensor in [0, 1], got {tuple(img.shape)} {img.dtype}"
            )
        img = (img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {img.shape} {img.dtype}")
    return img


def rgb_to_y(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """MATLAB `rgb2ycbcr` luma: Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1]), rounded to integers
    like MATLAB's uint8 output. Returns float64 (H, W) in [16, 235]."""
    rgb = _to_uint8_hwc(img).astype(np.float64) / 255.0
    y = 16.0 + rgb @ np.array([65.481, 128.553, 24.966])
    return np.round(y)


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border > 0 else y


def psnr_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor, crop_border: int = 0) -> float:
    """PSNR in dB on Y (peak 255). `crop_border` pixels are dropped on every side first (BasicSR's
    benchmarks crop the scale, 4); the default 0, used by every evaluation here, matches pyiqa and RSD's
    evaluate.py."""
    mse = np.mean((_crop(rgb_to_y(sr), crop_border) - _crop(rgb_to_y(hr), crop_border)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()  # (size,); the 2-D window is its outer product


def _filter_valid(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 2-D Gaussian filter without padding: (N, 1, H, W) -> (N, 1, H - k + 1, W - k + 1)."""
    return F.conv2d(F.conv2d(maps, g[None, None, :, None]), g[None, None, None, :])


def ssim_y(sr: np.ndarray | torch.Tensor, hr: np.ndarray | torch.Tensor, crop_border: int = 0) -> float:
    """SSIM (Wang et al. 2004) on Y in [0, 255]: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, mean
    over the valid region (no padding), as MATLAB `ssim_index`. `crop_border` as in `psnr_y`."""
    a = torch.from_numpy(_crop(rgb_to_y(sr), crop_border))  # (H, W) float64
    b = torch.from_numpy(_crop(rgb_to_y(hr), crop_border))
    maps = torch.stack([a, b, a * a, b * b, a * b])[:, None]  # (5, 1, H, W)
    mu_a, mu_b, e_aa, e_bb, e_ab = _filter_valid(maps, _gaussian_window())
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1], the input of `DISTS` (LPIPS wants 2 x - 1)."""
    hwc = torch.tensor(_to_uint8_hwc(img))  # a copy: arrays from PIL are read-only
    return hwc.permute(2, 0, 1)[None].float() / 255.0


# ------------------------------------------------------------------------------------------------------------
# Feature trunks (ImageNet AlexNet / VGG16 convolutions in torchvision layout)


class AlexNetFeatures(nn.Module):
    """AlexNet conv trunk; returns relu1..relu5 with 64, 192, 384, 256, 256 channels."""

    channels = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # 3x3 / stride 2 max-pool before conv2 and conv3
                x = F.max_pool2d(x, 3, stride=2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats


class L2Pool(nn.Module):
    """DISTS' anti-aliased stand-in for VGG's max-pools: sqrt(3x3 Hanning blur of x^2), stride 2."""

    def __init__(self):
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])
        kernel = torch.outer(a, a)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)  # (1, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        out = F.conv2d(x**2, self.kernel.expand(c, 1, 3, 3), stride=2, padding=1, groups=c)
        return torch.sqrt(out + 1e-12)


class VGG16Features(nn.Module):
    """VGG16 conv trunk (13 convs); returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. `pool` runs between
    stages: 2x2 max-pool for LPIPS, `L2Pool` for DISTS."""

    stages = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    channels = (64, 128, 256, 512, 512)

    def __init__(self, pool: nn.Module):
        super().__init__()
        convs, c_in = [], 3
        for stage in self.stages:
            for c_out in stage:
                convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, convs = [], iter(self.convs)
        for k, stage in enumerate(self.stages):
            if k > 0:
                x = self.pool(x)
            for _ in stage:
                x = F.relu(next(convs)(x))
            feats.append(x)
        return feats


# ------------------------------------------------------------------------------------------------------------
# LPIPS v0.1


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. forward(x, y): (B, 3, H, W) in [-1, 1] -> (B,).

    Per layer: unit-normalise features over channels, squared difference, learned 1x1 weighting (the dropout
    in front of it is identity at eval), spatial mean; the distance is the sum over the five layers.
    """

    def __init__(self, net: str = "alex", weights: str | Path | None = None):
        super().__init__()
        if net == "alex":
            self.net = AlexNetFeatures()
        elif net == "vgg":
            self.net = VGG16Features(nn.MaxPool2d(2, 2))
        else:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.net.channels)
        # lpips' ScalingLayer: maps [-1, 1] to roughly ImageNet-normalised inputs
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None], persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None], persistent=False
        )
        self.load_state_dict(load_file(str(weights or pretrained.lpips_weights(net))))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats_x = self.net((x - self.shift) / self.scale)
        feats_y = self.net((y - self.shift) / self.scale)
        dist = 0.0
        for lin, fx, fy in zip(self.lins, feats_x, feats_y, strict=True):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2  # (B, C, h, w)
            dist = dist + lin(diff).mean(dim=(2, 3))  # (B, 1)
        return dist[:, 0]


def _unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # vector_norm has a zero subgradient where a feature column is all 0 (sqrt(sum x^2) would give NaN grads)
    return feat / (torch.linalg.vector_norm(feat, dim=1, keepdim=True) + eps)


# ------------------------------------------------------------------------------------------------------------
# DISTS


class DISTS(nn.Module):
    """DISTS distance. forward(x, y): (B, 3, H, W) in [0, 1] -> (B,).

    Six stages: the raw image, then VGG16 relu1_2..relu5_3 with L2 pooling (3, 64, 128, 256, 512, 512
    channels).
    Per channel: a texture term from global means and a structure term from global variances / covariance,
    mixed by the learned alpha / beta (normalised by their total); the distance is 1 - similarity.
    """

    stage_channels = (3, 64, 128, 256, 512, 512)

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self.net = VGG16Features(L2Pool())
        self.register_buffer("alpha", torch.empty(1, sum(self.stage_channels), 1, 1))
        self.register_buffer("beta", torch.empty(1, sum(self.stage_channels), 1, 1))
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None], persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None], persistent=False
        )
        self.load_state_dict(load_file(str(weights or pretrained.dists_weights())))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats_x = [x, *self.net((x - self.mean) / self.std)]
        feats_y = [y, *self.net((y - self.mean) / self.std)]
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, self.stage_channels, dim=1)
        betas = torch.split(self.beta / total, self.stage_channels, dim=1)
        c1 = c2 = 1e-6
        similarity = 0.0
        for fx, fy, alpha, beta in zip(feats_x, feats_y, alphas, betas, strict=True):
            mx, my = fx.mean(dim=(2, 3), keepdim=True), fy.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
            texture = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            vx = ((fx - mx) ** 2).mean(dim=(2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean(dim=(2, 3), keepdim=True)
            cov = (fx * fy).mean(dim=(2, 3), keepdim=True) - mx * my
            structure = (2 * cov + c2) / (vx + vy + c2)
            similarity = similarity + (alpha * texture + beta * structure).sum(dim=(1, 2, 3))  # (B,)
        return 1 - similarity
