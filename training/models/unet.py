"""ResShift Swin-UNet (`UNetModelSwin`) with the parameter names of the official checkpoints.

A guided-diffusion UNet (ResBlocks with scale-shift time conditioning) whose attention blocks are small
channels-first Swin transformers (`BasicLayer`). The LR image is concatenated to the latent at the input
(lq_size == image_size, so the official `feature_extractor` is the identity); the RSD student additionally
takes a noise map as extra input channels (`noise_channels`, see `build_student`).

Behaviour that must match the official code for its weights to work (pinned by the golden tests):
  * timestep embedding [cos, sin], frequencies exp(-ln(1e4) * i / half), raw integer step indices;
  * Swin blocks use GroupNorm(32) and a 1x1-conv MLP, and there is no residual around a BasicLayer;
  * the shifted-window mask reproduces an indexing quirk of the official code (see `shifted_window_mask`)
    and is computed from the runtime feature size; the `attn_mask` buffers in checkpoints are never read.

Numbers in shape comments are for the full model (model_channels 160, swin_embed_dim 192, window 8).
"""

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LQ_CHANNELS = 3  # the LR condition is an RGB image in [-1, 1]
MASK_VALUE = -100.0  # what the official shifted-window mask adds to masked logits


@dataclass(frozen=True)
class UNetConfig:
    """Official `UNetModelSwin` constructor kwargs (defaults = realsr v1/v3 config) plus `noise_channels`."""

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    num_res_blocks: int | tuple[int, ...] = (2, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    conv_resample: bool = True
    dims: int = 2
    use_fp16: bool = False
    num_heads: int = 1
    num_head_channels: int = 32
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4
    cond_lq: bool = True
    lq_size: int = 64
    patch_norm: bool = False
    cond_mask: bool = False
    noise_channels: int = 0  # not official: extra input channels of the RSD student (0 for the teacher)
    # not official: Swin blocks per BasicLayer at each channel_mult level (the middle block takes the last);
    # None = swin_depth everywhere. Fewer at level 0, where attention runs over every latent pixel.
    swin_depths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # YAML/JSON give lists; store tuples so the config stays hashable and comparable.
        nrb = self.num_res_blocks
        nrb = (nrb,) * len(self.channel_mult) if isinstance(nrb, int) else tuple(nrb)
        object.__setattr__(self, "num_res_blocks", nrb)
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        depths = (self.swin_depth,) * len(self.channel_mult) if self.swin_depths is None else self.swin_depths
        object.__setattr__(self, "swin_depths", tuple(depths))
        unsupported = {
            "dims != 2": self.dims != 2,
            "resblock_updown=True": self.resblock_updown,
            "conv_resample=False": not self.conv_resample,
            "cond_mask=True": self.cond_mask,
            "patch_norm=True": self.patch_norm,
            "use_fp16=True (keep fp32 weights and run under torch.autocast instead)": self.use_fp16,
            "cond_lq=True with lq_size != image_size (the strided LR feature extractor of the x2 config)": (
                self.cond_lq and self.lq_size != self.image_size
            ),
        }
        bad = [name for name, flag in unsupported.items() if flag]
        if bad:
            raise ValueError(f"UNetModelSwin: unsupported configuration: {', '.join(bad)}")
        if len(nrb) != len(self.channel_mult):
            raise ValueError(
                f"num_res_blocks {nrb} needs one entry per channel_mult level {self.channel_mult}"
            )
        if len(self.swin_depths) != len(self.channel_mult) or min(self.swin_depths) < 1:
            raise ValueError(f"swin_depths needs one count >= 1 per level, got {self.swin_depths}")
        if self.noise_channels < 0:
            raise ValueError(f"noise_channels must be >= 0, got {self.noise_channels}")
        if self.noise_channels and not self.cond_lq:
            raise ValueError("noise_channels > 0 needs cond_lq=True (noise is concatenated after [x, lq])")

    @property
    def swin_heads(self) -> int:
        if self.num_head_channels == -1:
            return self.num_heads
        return self.swin_embed_dim // self.num_head_channels

    @property
    def input_channels(self) -> int:
        """Channels of the first conv: latent, then LR image, then student noise."""
        return self.in_channels + (LQ_CHANNELS if self.cond_lq else 0) + self.noise_channels


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim), cos half first (official order)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 and cast back, so fp16/bf16 autocast stays stable."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(32, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Convolutional parts (guided-diffusion style)


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands the time embedding to the ResBlocks among its children."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ResBlock(nn.Module):
    def __init__(
        self, channels: int, emb_channels: int, dropout: float, out_channels: int, scale_shift: bool
    ):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if scale_shift else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)  # official zero_module: a fresh block starts as identity
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)  # (B, out, H, W)
        e = self.emb_layers(emb).type(h.dtype)[..., None, None]  # (B, 2*out or out, 1, 1)
        if self.scale_shift:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# ----------------------------------------------------------------------------------------------------------
# Swin transformer parts (channels-first, GroupNorm, 1x1-conv MLP)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into the (2w-1)^2 bias table for every token pair of a window, N = w*w."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), each in [0, 2w-2]
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(
    height: int, window: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """Additive mask (H/w, N, N) of the official shifted-window attention, one per row of windows.

    Reproduces an indexing quirk of the official `calculate_mask`: regions are labelled by row only
    ([0, H-w), [H-w, H-shift), [H-shift, H)) and each window reads its labels in transposed token order,
    so token (i, j) of window row r gets the label of row r*w + j. The mask therefore depends on H alone,
    is shared by every window of a row and is non-zero only in the last window row. Pinned by the golden
    `attn_mask` buffers (square sizes) and the 32x64 golden output.
    """
    rows = torch.arange(height, device=device)
    region = (rows >= height - window).long() + (rows >= height - shift).long()  # (H,) in {0, 1, 2}
    # (H/w, i, j) -> label of row r*w + j
    region = region.view(height // window, 1, window).expand(-1, window, -1).reshape(height // window, -1)
    different = region[:, :, None] != region[:, None, :]  # (H/w, N, N)
    return torch.where(different, MASK_VALUE, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, windows_per_row: int) -> torch.Tensor:
        """x (B*nW, N, C); mask (nWh, N, N) or None, shared by the `windows_per_row` windows of a row."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1)
        if mask is not None:
            rows = mask.shape[0]
            attn = (
                attn.view(-1, rows, windows_per_row, self.num_heads, n, n)
                + mask.to(attn.dtype)[:, None, None]
            )
            attn = attn.view(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm window attention + MLP on (B, C, H, W); every second block of a layer shifts by w/2."""

    def __init__(
        self, dim: int, resolution: int, num_heads: int, window: int, shifted: bool, mlp_ratio: float
    ):
        super().__init__()
        if resolution <= window:  # official: the window covers the whole (build-time) map, nothing to shift
            window = resolution
            shifted = False
        self.window = window
        self.shift = window // 2 if shifted else 0
        if self.shift:
            # Kept only so checkpoints load strictly (official buffer at image_size); never read.
            rows = shifted_window_mask(resolution, window, self.shift)  # (nWh, N, N)
            nw = resolution // window
            self.register_buffer(
                "attn_mask", rows[:, None].expand(-1, nw, -1, -1).reshape(nw * nw, *rows.shape[1:])
            )
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = GroupNorm32(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    def runtime_mask(self, height: int, device: torch.device) -> torch.Tensor:
        """Mask for the actual feature height, cached per (height, device) in eager mode.

        Under ONNX tracing or torch.compile the height may be a traced value, so the mask is built in-graph
        (a handful of tiny ops) instead of going through the Python cache.
        """
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return shifted_window_mask(height, self.window, self.shift, device)
        key = (height, device)
        if key not in self._mask_cache:
            self._mask_cache[key] = shifted_window_mask(height, self.window, self.shift, device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws, s = self.window, self.shift
        if h % ws or w % ws:
            raise ValueError(f"Swin feature map {h}x{w} is not divisible by the window {ws}")
        y = self.norm1(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        # partition into windows: (B*nWh*nWw, N, C), windows in row-major order
        y = y.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        y = self.attn(y, self.runtime_mask(h, x.device) if s else None, w // ws)
        y = y.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.permute(0, 3, 1, 2)
        return x + self.mlp(self.norm2(x))


class PatchConv(nn.Module):
    """1x1 conv named like the official PatchEmbed/PatchUnEmbed (patch size 1, no norm)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class BasicLayer(nn.Module):
    """C -> embed (1x1) -> depth Swin blocks -> C (1x1); no residual around the layer (official)."""

    def __init__(self, channels: int, cfg: UNetConfig, resolution: int, depth: int):
        super().__init__()
        embed = cfg.swin_embed_dim
        self.patch_embed = PatchConv(channels, embed)
        self.patch_unembed = PatchConv(embed, channels)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                embed, resolution, cfg.swin_heads, cfg.window_size, i % 2 == 1, cfg.mlp_ratio
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, embed, H, W)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


# ----------------------------------------------------------------------------------------------------------
# The UNet


class UNetModelSwin(nn.Module):
    """`UNetModelSwin(**official_kwargs)`; add `noise_channels=k` to rebuild an RSD student."""

    def __init__(self, **kwargs: Any):
        super().__init__()
        cfg = self.config = UNetConfig(**kwargs)
        self.noise_channels = cfg.noise_channels
        mc = cfg.model_channels
        emb_dim = 4 * mc
        attention_ds = {cfg.image_size // res for res in cfg.attention_resolutions}

        def resblock(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_dim, cfg.dropout, ch_out, cfg.use_scale_shift_norm)

        def swin(ch: int, ds: int) -> BasicLayer:
            return BasicLayer(ch, cfg, cfg.image_size // ds, cfg.swin_depths[ds.bit_length() - 1])

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(cfg.input_channels, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks[level]):
                layers: list[nn.Module] = [resblock(ch, mc * mult)]
                ch = mc * mult
                if ds in attention_ds and j == 0:
                    layers.append(swin(ch, ds))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(resblock(ch, ch), swin(ch, ds), resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [resblock(ch + skip_chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in attention_ds and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def encode(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        lq: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The down path: (middle-block features (B, C_mid, H/8, W/8), skips, time embedding)."""
        cfg = self.config
        inputs = [x]
        if cfg.cond_lq:
            if lq is None:
                raise ValueError("this UNet is conditioned on the LR image: pass lq=")
            inputs.append(lq)
        elif lq is not None:
            raise ValueError("this UNet was built with cond_lq=False but lq was given")
        if self.noise_channels:
            if noise is None or noise.shape[1] != self.noise_channels:
                got = None if noise is None else tuple(noise.shape)
                raise ValueError(
                    f"this student needs noise of shape (B, {self.noise_channels}, H, W), got {got}"
                )
            inputs.append(noise)
        elif noise is not None:
            raise ValueError("noise= is only accepted by a student built with noise_channels > 0")

        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels))  # (B, 4*mc)
        h = torch.cat(inputs, dim=1)  # (B, in + 3 + k, H, W)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        return self.middle_block(h, emb), skips, emb  # middle: (B, 640, H/8, W/8) at full size

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        lq: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, in, H, W) scaled latent, timesteps (B,) step indices, lq (B, 3, H, W), noise (B, k, H, W)."""
        h, skips, emb = self.encode(x, timesteps, lq=lq, noise=noise)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)  # (B, out, H, W)

    @property
    def bottleneck_channels(self) -> int:
        return self.config.model_channels * self.config.channel_mult[-1]


def build_unet(kwargs: dict[str, Any]) -> UNetModelSwin:
    """Build from an official constructor-kwargs dict (YAML `model.params` or a keys manifest)."""
    return UNetModelSwin(**kwargs)


def build_student(teacher: UNetModelSwin, noise_channels: int = 1) -> UNetModelSwin:
    """RSD generator: a copy of the teacher whose first conv also reads `noise_channels` noise maps.

    The new input slice is zero so the student starts as the teacher exactly, whatever noise it gets.
    """
    if teacher.noise_channels:
        raise ValueError("build_student expects a teacher without noise channels")
    if noise_channels < 1:
        raise ValueError(f"noise_channels must be >= 1, got {noise_channels}")
    student = copy.deepcopy(teacher)
    old = teacher.input_blocks[0][0]
    new = nn.Conv2d(old.in_channels + noise_channels, old.out_channels, 3, padding=1)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    student.input_blocks[0][0] = new
    student.config = replace(teacher.config, noise_channels=noise_channels)
    student.noise_channels = noise_channels
    return student


__all__ = ["UNetConfig", "UNetModelSwin", "build_student", "build_unet", "timestep_embedding"]
