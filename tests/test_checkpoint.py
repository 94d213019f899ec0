import json

import pytest
import torch
from safetensors.torch import save_file

from training.checkpoint import (
    CheckpointMismatchError,
    copy_model_dir,
    load_model_dir,
    load_official_state_dict,
    load_pruned_state_dict,
    load_state_dict_checked,
    save_model_dir,
)
from training.diffusion import ScheduleConfig
from training.models import LightAutoencoder, LightEncoderVQ, build_autoencoder, build_unet
from training.presets import load_preset


@pytest.fixture(scope="module")
def golden_kwargs(reference_dir):
    cfg = json.loads((reference_dir / "golden" / "config.json").read_text())
    return cfg["unet_kwargs"], cfg["vq_kwargs"]


def test_model_dir_round_trip_is_bit_exact(tmp_path, golden_kwargs):
    unet_kwargs, vq_kwargs = golden_kwargs
    torch.manual_seed(0)
    unet, ae = build_unet(unet_kwargs), build_autoencoder(vq_kwargs)
    save_model_dir(
        tmp_path / "m",
        unet=unet,
        unet_kwargs=unet_kwargs,
        autoencoder=ae,
        autoencoder_kwargs=vq_kwargs,
        schedule=ScheduleConfig(),
        meta={"name": "test"},
    )
    bundle = load_model_dir(tmp_path / "m")
    for original, loaded in ((unet, bundle.unet), (ae, bundle.autoencoder)):
        theirs = loaded.state_dict()
        for key, value in original.state_dict().items():
            assert torch.equal(value, theirs[key]), key
    assert bundle.schedule.num_timesteps == ScheduleConfig().steps
    assert bundle.config["meta"]["name"] == "test"


def test_copy_with_fp16_unet_storage_halves_the_unet_and_loads_rounded_weights(tmp_path, golden_kwargs):
    unet_kwargs, vq_kwargs = golden_kwargs
    torch.manual_seed(0)
    unet, ae = build_unet(unet_kwargs), build_autoencoder(vq_kwargs)
    save_model_dir(tmp_path / "m", unet=unet, unet_kwargs=unet_kwargs, autoencoder=ae,
                   autoencoder_kwargs=vq_kwargs, schedule=ScheduleConfig())  # fmt: skip
    copy_model_dir(tmp_path / "m", tmp_path / "half", unet_dtype=torch.float16)
    ratio = (tmp_path / "half" / "unet.safetensors").stat().st_size / (
        tmp_path / "m" / "unet.safetensors"
    ).stat().st_size
    assert 0.45 < ratio < 0.6
    bundle = load_model_dir(tmp_path / "half")
    for key, value in unet.state_dict().items():
        loaded = bundle.unet.state_dict()[key]
        assert loaded.dtype == value.dtype, key  # computes in fp32
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(loaded, expected), key
    for key, value in ae.state_dict().items():  # the autoencoder is copied as it is
        assert torch.equal(bundle.autoencoder.state_dict()[key], value), key


def test_copy_can_take_the_autoencoder_from_another_model_dir(tmp_path, golden_kwargs):
    unet_kwargs, vq_kwargs = golden_kwargs
    torch.manual_seed(0)
    unet, ae = build_unet(unet_kwargs), build_autoencoder(vq_kwargs)
    slim_kwargs = {**vq_kwargs, "ddconfig": {**vq_kwargs["ddconfig"], "mid_attention": False}}
    slim = build_autoencoder(slim_kwargs)
    save_model_dir(tmp_path / "m", unet=unet, unet_kwargs=unet_kwargs, autoencoder=ae,
                   autoencoder_kwargs=vq_kwargs, schedule=ScheduleConfig())  # fmt: skip
    save_model_dir(tmp_path / "slim", unet=None, unet_kwargs=None, autoencoder=slim,
                   autoencoder_kwargs=slim_kwargs, schedule=ScheduleConfig())  # fmt: skip
    copy_model_dir(tmp_path / "m", tmp_path / "both", autoencoder_from=tmp_path / "slim")
    bundle = load_model_dir(tmp_path / "both")
    assert bundle.config["components"]["autoencoder"]["kwargs"] == slim_kwargs
    for key, value in slim.state_dict().items():
        assert torch.equal(bundle.autoencoder.state_dict()[key], value), key
    for key, value in unet.state_dict().items():
        assert torch.equal(bundle.unet.state_dict()[key], value), key


def test_copy_can_put_a_light_lr_encoder_in_front_of_the_vq_autoencoder(tmp_path, golden_kwargs):
    unet_kwargs, vq_kwargs = golden_kwargs
    torch.manual_seed(0)
    unet, ae = build_unet(unet_kwargs), build_autoencoder(vq_kwargs).eval()
    light = LightAutoencoder(latent_channels=ae.latent_channels).eval()
    for parameter in light.parameters():  # not the resampling pair it starts as
        torch.nn.init.normal_(parameter, std=0.05)
    save_model_dir(tmp_path / "m", unet=unet, unet_kwargs=unet_kwargs, autoencoder=ae,
                   autoencoder_kwargs=vq_kwargs, schedule=ScheduleConfig())  # fmt: skip
    save_model_dir(tmp_path / "light", unet=None, unet_kwargs=None, autoencoder=light,
                   autoencoder_kwargs=light.kwargs(), schedule=ScheduleConfig())  # fmt: skip
    copy_model_dir(tmp_path / "m", tmp_path / "hybrid", lr_encoder_from=tmp_path / "light")
    hybrid = load_model_dir(tmp_path / "hybrid").autoencoder
    assert isinstance(hybrid, LightEncoderVQ) and hybrid.decode_quantized == ae.decode_quantized
    lq = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = hybrid.encode_lr(lq)
        assert torch.equal(z, light.encode_lr(lq)) and not torch.allclose(z, ae.encode_lr(lq))
        assert torch.equal(hybrid.decode(z), ae.decode(z)) and torch.equal(hybrid.encode(hr), ae.encode(hr))
    with pytest.raises(ValueError, match="light autoencoder's LR encoder"):
        copy_model_dir(tmp_path / "m", tmp_path / "x", lr_encoder_from=tmp_path / "m")


def test_official_layout_with_prefix_and_nesting_loads(tmp_path):
    """An official-style .pth of the full-size UNet: nested under 'state_dict' and DDP-prefixed."""
    kwargs = load_preset("resshift-x4")["unet"]
    torch.manual_seed(0)
    source = build_unet(kwargs)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "step": 7}
    torch.save(wrapped, tmp_path / "resshift_realsrx4_s4_v3.pth")
    state = load_official_state_dict(tmp_path / "resshift_realsrx4_s4_v3.pth")
    target = build_unet(kwargs)
    load_state_dict_checked(target, state)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_bare_state_dict_with_compile_prefix_loads(tmp_path, golden_kwargs):
    _, vq_kwargs = golden_kwargs
    source = build_autoencoder(vq_kwargs)
    torch.save({f"_orig_mod.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ae.pth")
    load_state_dict_checked(build_autoencoder(vq_kwargs), load_official_state_dict(tmp_path / "ae.pth"))


def test_mismatched_weights_name_missing_unexpected_and_misshaped_keys(tmp_path, golden_kwargs):
    _, vq_kwargs = golden_kwargs
    ae = build_autoencoder(vq_kwargs)
    save_model_dir(
        tmp_path / "m",
        unet=None,
        unet_kwargs=None,
        autoencoder=ae,
        autoencoder_kwargs=vq_kwargs,
        schedule=ScheduleConfig(),
    )
    state = dict(ae.state_dict())
    state.pop("decoder.conv_out.bias")
    state["encoder.extra.weight"] = torch.zeros(1)
    state["quant_conv.weight"] = torch.zeros(5, 3, 1, 1)
    save_file(state, str(tmp_path / "m" / "autoencoder.safetensors"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_model_dir(tmp_path / "m")
    message = str(err.value)
    assert "missing keys: decoder.conv_out.bias" in message
    assert "unexpected keys: encoder.extra.weight" in message
    assert "mis-shaped keys: quant_conv.weight: file (5, 3, 1, 1) vs model (3, 3, 1, 1)" in message


def test_non_checkpoint_file_is_rejected(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointMismatchError, match="not a state_dict"):
        load_official_state_dict(tmp_path / "list.pth")


def test_pruned_state_dict_loads_what_remains_and_refuses_any_other_difference():
    """Only the keys the predicate calls dropped may be left out; a missing or mis-shaped key still fails."""
    torch.manual_seed(0)
    full = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    pruned = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("1.")}
    state = {k.replace("2.", "1.", 1) if k.startswith("2.") else k: v for k, v in state.items()}
    extra = {**state, "9.weight": torch.zeros(1)}
    load_pruned_state_dict(pruned, extra, lambda key: key.startswith("9."), "full")
    assert torch.equal(pruned[1].weight, full[2].weight)
    with pytest.raises(CheckpointMismatchError, match=r"not a pruning.*9\.weight"):
        load_pruned_state_dict(pruned, extra, lambda key: key.startswith("8."), "full")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: 1\.bias"):
        load_pruned_state_dict(pruned, {k: v for k, v in state.items() if k != "1.bias"}, bool, "full")
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        load_pruned_state_dict(pruned, {**state, "0.weight": torch.zeros(2, 4)}, bool, "full")
