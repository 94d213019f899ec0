"""VQ-f4 autoencoder of ResShift (LDM `Encoder`/`Decoder` + `VectorQuantizer2`), written from the facts in
shared/reference (REFERENCE_CODE.md 2.2). Parameter names equal the official `weights/autoencoder_vq_f4.pth`
state_dict, so the official checkpoint loads with `strict=True`.

Data flow (f = 2**(len(ch_mult)-1) = 4 for the official config):

    image (B,3,H,W) in [-1,1]
      -> encode():  quant_conv(encoder(x))                 latent (B,embed_dim,H/f,W/f), NOT quantized
      -> decode():  quantize (default, straight-through) -> post_quant_conv -> decoder -> (B,out_ch,H,W)

The diffusion model works on the continuous latent; ResShift quantizes only when decoding.
"""

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from training.resample import upscale

# ----------------------------------------------------------------------------------------------------
# config


@dataclass
class DDConfig:
    """`ddconfig` of the official autoencoder (defaults = the VQ-f4 used by every ResShift realsr config).

    resample_skip is ours (default off, never set for the official model): a parameter-free bypass that makes
    the untrained autoencoder behave like box-downsample / bicubic-upsample, so that a narrow autoencoder
    trained from scratch only has to learn a residual on top of a good resampling pair (a narrow f4 model
    trained for minutes on CPU otherwise stays ~10 dB below bicubic). See Encoder/Decoder.forward.
    mid_attention is ours too (default on, as officially); off, the cost is linear in the tile's area.
    decoder_blocks is ours too: ResnetBlocks per decoder level (index 0 = full resolution), by default
    num_res_blocks + 1 at every level as officially; fewer at full resolution, where a block costs the most.
    """

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    in_channels: int = 3
    resolution: int = 256  # only used to decide where attn_resolutions apply
    z_channels: int = 3
    double_z: bool = False
    padding_mode: str = "zeros"  # present in the official config; the official code ignores it, and so do we
    resample_skip: bool = False
    # False drops the attention of both mid blocks, the one layer that sees the whole tile: its cost grows
    # with the square of the tile's area.
    mid_attention: bool = True
    decoder_blocks: tuple[int, ...] | None = None

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if self.decoder_blocks is None:
            self.decoder_blocks = (self.num_res_blocks + 1,) * len(self.ch_mult)
        self.decoder_blocks = tuple(self.decoder_blocks)
        if len(self.decoder_blocks) != len(self.ch_mult) or min(self.decoder_blocks) < 1:
            raise ValueError(f"decoder_blocks needs one count >= 1 per level, got {self.decoder_blocks}")
        if self.double_z:
            raise ValueError("double_z=True is a KL-autoencoder option; the VQ model needs double_z=False")
        if self.resample_skip and not (self.in_channels == self.z_channels == self.out_ch):
            raise ValueError(
                "resample_skip needs in_channels == z_channels == out_ch (the latent is an image)"
            )

    @property
    def factor(self) -> int:
        """Spatial down/up-sampling factor between image and latent."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_dict(cls, d: dict) -> "DDConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown ddconfig keys: {sorted(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------------
# building blocks


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """GN-swish-conv x2 plus residual; 1x1 `nin_shortcut` when the width changes (no time embedding here)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, q/k/v/proj_out as 1x1 convs, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        # (B,C,H,W) -> (B,1,HW,C): one head of width C; SDPA's default scale C**-0.5 is the official one
        q, k, v = (t(hn).reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B,1,HW,C)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric zero pad (right/bottom only): H -> floor(H/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResnetBlock -> AttnBlock -> ResnetBlock at the lowest resolution (`mid.block_1/attn_1/block_2`);
    without attention, the two ResnetBlocks."""

    def __init__(self, channels: int, dropout: float, attention: bool = True):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class EncoderLevel(nn.Module):
    """One resolution of the encoder: `block.{j}` (+ `attn.{j}`), then `downsample` unless it is the last."""

    def __init__(
        self, in_ch: int, out_ch: int, n_blocks: int, use_attn: bool, downsample: bool, dropout: float
    ):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_ch if j == 0 else out_ch, out_ch, dropout) for j in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_blocks if use_attn else 0))
        self.downsample = Downsample(out_ch) if downsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[j](h)
        return self.downsample(h) if self.downsample is not None else h


class DecoderLevel(nn.Module):
    """One resolution of the decoder: `block.{j}` (+ `attn.{j}`), then `upsample` unless it is level 0."""

    def __init__(
        self, in_ch: int, out_ch: int, n_blocks: int, use_attn: bool, upsample: bool, dropout: float
    ):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_ch if j == 0 else out_ch, out_ch, dropout) for j in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_blocks if use_attn else 0))
        self.upsample = Upsample(out_ch) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[j](h)
        return self.upsample(h) if self.upsample is not None else h


# ----------------------------------------------------------------------------------------------------
# encoder / decoder


class Encoder(nn.Module):
    def __init__(self, cfg: DDConfig):
        super().__init__()
        self.resample_skip = cfg.resample_skip
        self.factor = cfg.factor
        widths = [cfg.ch * m for m in (1, *cfg.ch_mult)]  # widths[i] -> widths[i+1] at level i
        n_levels = len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels, res = [], cfg.resolution
        for i in range(n_levels):
            use_attn = res in cfg.attn_resolutions
            levels.append(
                EncoderLevel(
                    widths[i], widths[i + 1], cfg.num_res_blocks, use_attn, i != n_levels - 1, cfg.dropout
                )
            )
            res //= 2
        self.down = nn.ModuleList(levels)
        self.mid = MidBlock(widths[-1], cfg.dropout, cfg.mid_attention)
        self.norm_out = Normalize(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B,ch,H,W)
        for level in self.down:
            h = level(h)  # ... -> (B,ch*ch_mult[-1],H/f,W/f)
        h = self.conv_out(swish(self.norm_out(self.mid(h))))  # (B,z_channels,H/f,W/f)
        if self.resample_skip:
            # box average over f x f pixels: the latent starts out as a small copy of the image
            h = h + F.avg_pool2d(x, kernel_size=self.factor, stride=self.factor)
        return h


class Decoder(nn.Module):
    def __init__(self, cfg: DDConfig):
        super().__init__()
        self.resample_skip = cfg.resample_skip
        self.factor = cfg.factor
        n_levels = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in, cfg.dropout, cfg.mid_attention)
        # built from the lowest resolution up, stored with index = level (0 = full resolution), as officially
        levels, res = {}, cfg.resolution // cfg.factor
        for i in reversed(range(n_levels)):
            block_out = cfg.ch * cfg.ch_mult[i]
            use_attn = res in cfg.attn_resolutions
            levels[i] = DecoderLevel(
                block_in, block_out, cfg.decoder_blocks[i], use_attn, i != 0, cfg.dropout
            )
            block_in, res = block_out, res * 2
        self.up = nn.ModuleList(levels[i] for i in range(n_levels))
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B,ch*ch_mult[-1],h,w)
        for level in reversed(self.up):
            h = level(h)  # ... -> (B,ch*ch_mult[0],h*f,w*f)
        h = self.conv_out(swish(self.norm_out(h)))  # (B,out_ch,h*f,w*f)
        if self.resample_skip:
            h = h + upscale(z, self.factor)
        return h


# ----------------------------------------------------------------------------------------------------
# vector quantizer


def color_lattice(n: int, dim: int) -> torch.Tensor:
    """n points in [-1, 1]^dim: the largest full lattice (k cell centres per axis) plus uniform extras."""
    k = round(n ** (1.0 / dim))
    while k**dim > n:
        k -= 1
    axis = (torch.arange(k, dtype=torch.float32) + 0.5) / k * 2 - 1
    grid = torch.stack(torch.meshgrid(*[axis] * dim, indexing="ij"), dim=-1).reshape(-1, dim)
    extra = torch.rand(n - grid.shape[0], dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return torch.cat([grid, extra])


SEARCH_CHUNK = 1024  # latent positions per codebook-search product (bounds its memory, not its result)


class VectorQuantizer2(nn.Module):
    """Nearest-codebook quantizer with straight-through gradient and the official *legacy* loss (beta = 0.25).

    Legacy loss = mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2): the commitment term (pulls the
    encoder towards the codebook) has weight 1 and the codebook term has weight beta (the order the official
    code keeps for `legacy=True`).
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, codebook_init: str = "official"):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)
        if codebook_init == "official":
            nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)
        elif codebook_init == "color_cube":
            # The latent of a resample_skip model is ~ a small RGB image in [-1,1]^e_dim: start the codes on a
            # regular lattice over that cube (remaining codes uniform), so every colour, seen in training or
            # not, has a code within half a lattice step.
            with torch.no_grad():
                self.embedding.weight.copy_(color_lattice(n_e, e_dim))
        else:
            raise ValueError(f"codebook_init must be 'official' or 'color_cube', got {codebook_init!r}")

    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B,C,h,w) -> (B,h,w) int64 index of the nearest code, in fp32 even for a half model.

        ||z - e||^2 = ||z||^2 + (||e||^2 - 2 z.e); the first term is the same for every code, so the argmin
        needs only the bracket, and that is one product of [z, 1] with the (C+1, n_e) table [-2 e; ||e||^2]:
        one MatMul in ONNX that writes the distance matrix once, then ArgMin (three passes over it had
        been a quarter of a tiny-x4 tile in ONNX Runtime). The positions go in chunks of SEARCH_CHUNK, so
        the matrix never exceeds (B, SEARCH_CHUNK, n_e): whole, it is 512 MiB per 128x128 tile with 8192
        codes. It also cancels less than ||z - e||^2.
        """
        b, c, h, w = z.shape
        zf = z.permute(0, 2, 3, 1).reshape(b, h * w, c).float()  # (B,hw,C)
        e = self.embedding.weight.float()  # (n_e,C)
        table = torch.cat([-2 * e.t(), e.pow(2).sum(dim=1)[None]])  # (C+1,n_e), a constant in a graph
        z1 = torch.cat([zf, torch.ones_like(zf[..., :1])], dim=2)  # (B,hw,C+1)
        parts = [(part @ table).argmin(dim=2) for part in z1.split(SEARCH_CHUNK, dim=1)]  # (B,chunk) each
        return torch.cat(parts, dim=1).reshape(b, h, w)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[None, None, torch.Tensor]]:
        """Returns `(z_q, loss, (None, None, indices))`, the official tuple layout.

        z_q (B,C,h,w): nearest codebook vectors in the forward pass, identity gradient w.r.t. z
        (straight-through); loss: scalar legacy VQ loss (see class docstring); indices (B,h,w) int64 (the
        official `sane_index_shape` layout). The official perplexity / one-hot slots are None there too.
        """
        indices = self.nearest_indices(z)  # (B,h,w)
        z_q = self.embedding(indices).permute(0, 3, 1, 2).to(z.dtype)  # (B,C,h,w)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q, loss, (None, None, indices)


# ----------------------------------------------------------------------------------------------------
# full model


class VQModelTorch(nn.Module):
    """The ResShift VQ-f4 autoencoder. Constructor kwargs = the official `autoencoder.params` + our options.

    Training an autoencoder with it:
        z = ae.encode(x)
        z_q, vq_loss, (_, _, idx) = ae.quantize(z)
        rec = ae.decode(z_q, force_not_quantize=True)

    Options (defaults = official):
      codebook_init: "official" (uniform +-1/n_embed) or "color_cube" (uniform in [-1,1]; use it with
        resample_skip, whose latent is a small RGB image).
      ddconfig["resample_skip"]: see DDConfig. The bypasses live inside Encoder/Decoder, so encode() stays
        "not quantized" and decode() still quantizes first. With it, encoder/decoder conv_out start at zero
        and quant_conv/post_quant_conv at identity, so at init encode = box-down x f and decode = bicubic-up
        x f of the (quantized) latent. No parameters are added: the state_dict keys equal those of the same
        config without it.
      decode_quantized: False makes decode() skip the codebook lookup and decode the continuous latent, for
        a decoder fine-tuned on a one-step student's latents (training/train_decoder.py). Official: True.
      remap / sane_index_shape: official kwargs; only remap=None is supported, indices are always (B,h,w).
    """

    def __init__(
        self,
        embed_dim: int,
        n_embed: int,
        ddconfig: dict,
        codebook_init: str = "official",
        decode_quantized: bool = True,
        remap: None = None,
        sane_index_shape: bool = False,
    ):
        super().__init__()
        if remap is not None:
            raise ValueError("codebook remapping (remap) is not supported")
        cfg = DDConfig.from_dict(dict(ddconfig))
        if cfg.resample_skip and embed_dim != cfg.z_channels:
            raise ValueError("resample_skip needs embed_dim == z_channels")
        self.cfg = cfg
        self.decode_quantized = decode_quantized
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25, codebook_init=codebook_init)
        self.quant_conv = nn.Conv2d(cfg.z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, cfg.z_channels, 1)
        if cfg.resample_skip:
            self._init_as_resampler()

    @torch.no_grad()
    def _init_as_resampler(self):
        for conv in (self.encoder.conv_out, self.decoder.conv_out):
            conv.weight.zero_()
            conv.bias.zero_()
        for conv in (self.quant_conv, self.post_quant_conv):
            conv.weight.copy_(torch.eye(conv.out_channels)[:, :, None, None])
            conv.bias.zero_()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> continuous latent (B,embed_dim,H/f,W/f); not quantized (ResShift's z_y)."""
        return self.quant_conv(self.encoder(x))

    def encode_lr(self, lq: torch.Tensor) -> torch.Tensor:
        """z_y, ResShift's condition: the latent of the bicubic-upsampled LR (lq (B,3,h,w) in [-1,1])."""
        return self.encode(upscale(lq, self.cfg.factor))

    @property
    def latent_channels(self) -> int:
        return self.quantize.e_dim

    def decode(self, z: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        """(B,embed_dim,h,w) -> (B,out_ch,h*f,w*f). Quantizes first (straight-through, so gradients reach z)
        unless force_not_quantize or the model decodes continuous latents (decode_quantized=False)."""
        if self.decode_quantized and not force_not_quantize:
            z, _, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def codebook_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B,embed_dim,h,w) latent -> (B,h,w) int64 nearest-code indices."""
        return self.quantize.nearest_indices(z)

    def forward(self, x: torch.Tensor, force_not_quantize: bool = False) -> torch.Tensor:
        return self.decode(self.encode(x), force_not_quantize=force_not_quantize)
