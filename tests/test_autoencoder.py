"""VQ-f4 autoencoder: golden vectors of the official code, official state_dict layout, resample_skip."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from training.models import LightAutoencoder, build_autoencoder
from training.models.autoencoder import SEARCH_CHUNK, VectorQuantizer2, VQModelTorch

ATOL = RTOL = 1e-4  # golden/README.md: single forward passes
PIPE_ATOL = 2e-4  # golden/README.md: pipeline latents/images


@pytest.fixture(scope="module")
def golden_vq(reference_dir):
    cfg = json.loads((reference_dir / "golden" / "config.json").read_text())
    model = build_autoencoder(cfg["vq_kwargs"]).eval()
    model.load_state_dict(load_file(reference_dir / "golden" / "vq_small.weights.safetensors"), strict=True)
    assert sum(p.numel() for p in model.parameters()) == cfg["vq_num_params"]
    return model


def test_golden_encode_quantize_decode(golden_vq, reference_dir):
    io = load_file(reference_dir / "golden" / "vq_small.io.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(golden_vq.encode(io["image"]), io["encode_out"], atol=ATOL, rtol=RTOL)
        z_q, loss, (_, _, indices) = golden_vq.quantize(io["encode_out"])
        torch.testing.assert_close(z_q, io["quant"], atol=ATOL, rtol=RTOL)
        assert indices.dtype == torch.int64 and indices.shape == (1, 16, 16)
        assert torch.equal(indices, io["indices"])
        assert torch.equal(golden_vq.codebook_indices(io["encode_out"]), io["indices"])
        assert loss.item() == pytest.approx(1.25 * F.mse_loss(io["quant"], io["encode_out"]).item(), rel=1e-4)
        # decode from the stored latent so that encoder error does not compound
        torch.testing.assert_close(golden_vq.decode(io["encode_out"]), io["decode_out"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(
            golden_vq.decode(io["encode_out"], force_not_quantize=True),
            io["decode_no_quant_out"],
            atol=ATOL,
            rtol=RTOL,
        )


def test_golden_pipeline_decode_and_encode(golden_vq, reference_dir):
    io = load_file(reference_dir / "golden" / "pipeline_small.io.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(golden_vq.decode(io["z0_final"]), io["decoded"], atol=PIPE_ATOL, rtol=RTOL)
        torch.testing.assert_close(
            golden_vq.decode(io["onestep_pred_xstart"]), io["onestep_decoded"], atol=PIPE_ATOL, rtol=RTOL
        )
        torch.testing.assert_close(
            golden_vq.encode(io["y0_bicubic_x4"]), io["z_y"], atol=PIPE_ATOL, rtol=RTOL
        )


def test_full_size_state_dict_matches_official_manifest(reference_dir):
    manifest = json.loads((reference_dir / "vq_f4.keys.json").read_text())
    with torch.device("meta"):  # shapes and dtypes only: no 55M-parameter allocation
        model = build_autoencoder(manifest["constructor_kwargs"])
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])
    for name, t in sd.items():
        entry = manifest["state_dict"][name]
        assert list(t.shape) == entry["shape"], name
        assert str(t.dtype).removeprefix("torch.") == entry["dtype"], name
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 55_322_782
    for sub, n in manifest["num_parameters_by_submodule"].items():
        assert sum(p.numel() for p in getattr(model, sub).parameters()) == n, sub


def test_legacy_vq_loss_gradients():
    """Legacy form: commitment (gradient to z) weight 1, codebook term weight beta = 0.25."""
    torch.manual_seed(0)
    quantizer = build_autoencoder(
        dict(embed_dim=3, n_embed=16, ddconfig=dict(ch=32, ch_mult=[1], num_res_blocks=1)),
    ).quantize
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    z_q, loss, (_, _, indices) = quantizer(z)
    loss.backward()
    codes = quantizer.embedding.weight.detach()[indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(z_q.detach(), codes)
    torch.testing.assert_close(z.grad, 2.0 * (z.detach() - codes) / z.numel())
    expected = torch.zeros_like(quantizer.embedding.weight).index_add_(
        0,
        indices.flatten(),
        (0.25 * 2.0 * (codes - z.detach()) / z.numel()).permute(0, 2, 3, 1).reshape(-1, 3),
    )
    torch.testing.assert_close(quantizer.embedding.weight.grad, expected)


SMALL = dict(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, attn_resolutions=[])


@pytest.fixture(scope="module")
def skip_model():
    torch.manual_seed(0)
    return VQModelTorch(
        embed_dim=3, n_embed=256, ddconfig={**SMALL, "resample_skip": True}, codebook_init="color_cube"
    ).eval()


def test_resample_skip_adds_no_parameters(skip_model):
    plain = VQModelTorch(embed_dim=3, n_embed=256, ddconfig=SMALL)
    assert {k: v.shape for k, v in skip_model.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    codebook = skip_model.quantize.embedding.weight
    assert codebook.min() >= -1 and codebook.max() <= 1 and codebook.min() < -0.9 and codebook.max() > 0.9


def test_resample_skip_starts_as_box_down_bicubic_up(skip_model):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        z = skip_model.encode(x)
        box = x.reshape(2, 3, 8, 4, 12, 4).mean(dim=(3, 5))
        torch.testing.assert_close(z, box, atol=1e-6, rtol=0)
        bicubic = F.interpolate(z, scale_factor=4, mode="bicubic", align_corners=False)
        torch.testing.assert_close(skip_model.decode(z, force_not_quantize=True), bicubic, atol=1e-6, rtol=0)
        z_q = skip_model.quantize(z)[0]
        bicubic_q = F.interpolate(z_q, scale_factor=4, mode="bicubic", align_corners=False)
        torch.testing.assert_close(skip_model.decode(z), bicubic_q, atol=1e-6, rtol=0)


@pytest.mark.parametrize("side", [16, 40])  # one chunk of SEARCH_CHUNK positions; two and a ragged one
def test_nearest_indices_equal_brute_force_distances(side):
    assert side * side <= SEARCH_CHUNK or side * side % SEARCH_CHUNK
    torch.manual_seed(0)
    quantizer = VectorQuantizer2(512, 3, codebook_init="color_cube")
    z = torch.rand(2, 3, side, side) * 2 - 1
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.cdist(flat.double(), quantizer.embedding.weight.double()).argmin(dim=1)
    assert torch.equal(quantizer.nearest_indices(z), brute.reshape(2, side, side))


def test_decode_straight_through_gradient(skip_model):
    """decode(z) backpropagates to z exactly as the unquantized decoder would at z_q (straight-through)."""
    torch.manual_seed(2)
    z = (torch.rand(1, 3, 6, 6) * 2 - 1).requires_grad_()
    weights = torch.randn(1, 3, 24, 24)
    (skip_model.decode(z) * weights).sum().backward()
    z_q = skip_model.quantize(z.detach())[0].requires_grad_()
    (skip_model.decode(z_q, force_not_quantize=True) * weights).sum().backward()
    assert z.grad.abs().sum() > 0
    torch.testing.assert_close(z.grad, z_q.grad)


def test_config_validation():
    with pytest.raises(TypeError, match="unknown ddconfig keys"):
        VQModelTorch(embed_dim=3, n_embed=8, ddconfig={**SMALL, "not_an_option": 1})
    with pytest.raises(ValueError, match="resample_skip"):
        VQModelTorch(embed_dim=3, n_embed=8, ddconfig={**SMALL, "resample_skip": True, "z_channels": 4})
    with pytest.raises(ValueError, match="codebook_init"):
        VQModelTorch(embed_dim=3, n_embed=8, ddconfig=SMALL, codebook_init="gaussian")


def test_attn_resolutions_place_attention_at_matching_levels():
    model = VQModelTorch(
        embed_dim=3,
        n_embed=8,
        ddconfig=dict(ch=32, ch_mult=[1, 2], num_res_blocks=1, resolution=32, attn_resolutions=[16]),
    )
    attn_levels = sorted({".".join(k.split(".")[:5]) for k in model.state_dict() if ".attn." in k})
    assert attn_levels == ["decoder.up.1.attn.0", "decoder.up.1.attn.1", "encoder.down.1.attn.0"]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_without_mid_attention_only_the_attention_is_dropped():
    """The slim autoencoder has every weight of the official layout but the two mid attentions, and with
    those weights it computes the official network with the attentions skipped."""
    torch.manual_seed(0)
    kwargs = dict(embed_dim=3, n_embed=8, ddconfig={**SMALL, "resample_skip": True, "z_channels": 3})
    full = VQModelTorch(**kwargs)
    for parameter in full.parameters():  # the zero-initialised output convs would hide the attention
        if not parameter.any():
            torch.nn.init.normal_(parameter, std=0.1)
    slim = VQModelTorch(**{**kwargs, "ddconfig": {**kwargs["ddconfig"], "mid_attention": False}})
    dropped = set(full.state_dict()) - set(slim.state_dict())
    assert dropped and {k.split(".mid.attn_1.")[0] for k in dropped} == {"encoder", "decoder"}
    slim.load_state_dict({k: v for k, v in full.state_dict().items() if k not in dropped})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        with_attention = full(x)
        full.encoder.mid.attn_1 = full.decoder.mid.attn_1 = torch.nn.Identity()
        torch.testing.assert_close(slim(x), full(x), atol=0, rtol=0)
        assert (slim(x) - with_attention).abs().max() > 1e-3


def test_decoder_blocks_drop_only_the_last_blocks_of_their_levels():
    """decoder_blocks=(1, 2, 2) is SMALL's decoder without its second full-resolution block: every other
    weight keeps its name and its place, and the network computes the full one with that block skipped."""
    torch.manual_seed(0)
    full = VQModelTorch(embed_dim=3, n_embed=8, ddconfig=SMALL)
    assert full.cfg.decoder_blocks == (2, 2, 2)  # num_res_blocks + 1 per level, as officially
    pruned = VQModelTorch(embed_dim=3, n_embed=8, ddconfig={**SMALL, "decoder_blocks": [1, 2, 2]})
    dropped = set(full.state_dict()) - set(pruned.state_dict())
    assert dropped and {k.split(".")[:4] == ["decoder", "up", "0", "block"] for k in dropped} == {True}
    assert {k.split(".")[4] for k in dropped} == {"1"}
    pruned.load_state_dict({k: v for k, v in full.state_dict().items() if k not in dropped})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        full.decoder.up[0].block[1] = torch.nn.Identity()
        torch.testing.assert_close(pruned(x), full(x), atol=0, rtol=0)
    for bad in ([1, 2], [0, 2, 2]):
        with pytest.raises(ValueError, match="decoder_blocks"):
            VQModelTorch(embed_dim=3, n_embed=8, ddconfig={**SMALL, "decoder_blocks": bad})


def test_light_autoencoder_starts_as_the_skip_models_resampling_pair(skip_model):
    """Untrained, the light model computes what an untrained resample_skip VQ model does: z_y of the
    bicubic-upsampled LR, and bicubic decoding. It is built from its stored kwargs."""
    light = build_autoencoder(LightAutoencoder().kwargs()).eval()
    assert isinstance(light, LightAutoencoder) and light.latent_channels == 3 and not light.decode_quantized
    lq = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(light.encode_lr(lq), skip_model.encode_lr(lq), atol=1e-6, rtol=0)
        z = skip_model.encode_lr(lq)
        decoded = light.decode(z)
        assert decoded.shape == (2, 3, 32, 48)
        torch.testing.assert_close(decoded, skip_model.decode(z, force_not_quantize=True), atol=1e-6, rtol=0)


def test_light_autoencoder_needs_one_decoder_stage_per_resolution():
    with pytest.raises(ValueError, match="one entry per resolution"):
        LightAutoencoder(decoder_widths=[32, 16])
    with pytest.raises(TypeError, match="unknown light autoencoder keys"):
        LightAutoencoder(ch=32)
