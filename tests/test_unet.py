"""ResShift Swin-UNet against the official code: golden vectors (reduced model) and the full-size manifest."""

import json

import pytest
import torch
from safetensors.torch import load_file

from training.models.unet import UNetConfig, UNetModelSwin, build_student, build_unet

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def golden(reference_dir):
    g = reference_dir / "golden"
    kwargs = json.loads((g / "config.json").read_text())["unet_kwargs"]
    return kwargs, load_file(g / "unet_small.weights.safetensors"), load_file(g / "unet_small.io.safetensors")


@pytest.fixture(scope="module")
def small(golden):
    kwargs, weights, _ = golden
    model = build_unet(kwargs).eval()
    model.load_state_dict(weights, strict=True)
    return model


def test_fresh_buffers_equal_official(golden):
    """relative_position_index and the unused image_size attn_mask are rebuilt as the official ones."""
    kwargs, weights, _ = golden
    fresh = build_unet(kwargs).state_dict()
    buffers = [k for k in weights if k.endswith(("attn_mask", "relative_position_index"))]
    assert len(buffers) == 24
    for k in buffers:
        assert fresh[k].dtype == weights[k].dtype and torch.equal(fresh[k], weights[k]), k


def test_golden_outputs_and_activations(small, golden):
    _, _, io = golden
    acts = {}

    def hook(name, with_input=False):
        def fn(module, args, out):
            acts[name] = out
            if with_input:
                acts[f"{name}.__input__"] = args[0]

        return fn

    handles = [small.time_embed.register_forward_hook(hook("time_embed"))]
    handles.append(small.middle_block.register_forward_hook(hook("middle_block")))
    for group in ("input_blocks", "output_blocks"):
        for i, block in enumerate(getattr(small, group)):
            handles.append(block.register_forward_hook(hook(f"{group}.{i}")))
    swin = small.input_blocks[1][1]
    handles.append(swin.register_forward_hook(hook("input_blocks.1.1", with_input=True)))
    handles.append(swin.blocks[1].register_forward_hook(hook("input_blocks.1.1.blocks.1", with_input=True)))
    assert swin.blocks[1].shift == 2  # the shifted block is the one the vectors pin down
    try:
        with torch.no_grad():
            out_a = small(io["case_a.x"], io["case_a.t"], lq=io["case_a.lq"])
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(out_a, io["case_a.out"], **TOL)

    expected = {k.removeprefix("case_a.act."): v for k, v in io.items() if k.startswith("case_a.act.")}
    assert len(expected) == 30 and set(expected) == set(acts)
    for name, ref in expected.items():
        torch.testing.assert_close(acts[name][:1], ref, **TOL, msg=lambda m, n=name: f"{n}: {m}")

    # 32x64 != image_size: exercises the runtime shifted-window mask on a non-square map
    with torch.no_grad():
        out_b = small(io["case_b.x"], io["case_b.t"], lq=io["case_b.lq"])
    torch.testing.assert_close(out_b, io["case_b.out"], **TOL)


def test_stored_attn_mask_is_not_read(small, golden):
    """Official behaviour: the mask is recomputed from the runtime size, the buffer is only for loading."""
    _, weights, io = golden
    masks = [k for k in weights if k.endswith("attn_mask")]
    with torch.no_grad():
        for k in masks:
            small.get_buffer(k).fill_(123.0)
        try:
            out = small(io["case_a.x"], io["case_a.t"], lq=io["case_a.lq"])
        finally:
            for k in masks:
                small.get_buffer(k).copy_(weights[k])
    torch.testing.assert_close(out, io["case_a.out"], **TOL)


def test_full_size_state_dict_matches_manifest(reference_dir):
    manifest = json.loads((reference_dir / "resshift_unet_realsr_v3.keys.json").read_text())
    with torch.device("meta"):
        model = build_unet(manifest["constructor_kwargs"])
    got = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in model.state_dict().items()
    }
    assert list(got) == list(manifest["state_dict"])  # same keys in the same order
    assert got == manifest["state_dict"]
    assert len(got) == manifest["num_state_dict_entries"] == 564
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 118_593_583
    # the realsr config is also the dataclass default
    assert model.config == UNetConfig()


def test_student_starts_as_teacher(small, golden):
    kwargs, _, io = golden
    student = build_student(small, noise_channels=1).eval()
    conv = student.input_blocks[0][0]
    c = kwargs["model_channels"]
    assert conv.weight.shape == (c, 7, 3, 3)
    assert torch.count_nonzero(conv.weight[:, 6:]) == 0
    assert torch.equal(conv.weight[:, :6], small.input_blocks[0][0].weight)
    assert small.input_blocks[0][0].weight.shape == (c, 6, 3, 3)  # teacher untouched
    n_teacher = sum(p.numel() for p in small.parameters())
    assert sum(p.numel() for p in student.parameters()) == n_teacher + c * 9

    x, t, lq = io["case_a.x"], io["case_a.t"], io["case_a.lq"]
    noise = torch.randn(x.shape[0], 1, *x.shape[2:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(student(x, t, lq=lq, noise=noise), small(x, t, lq=lq))

    # rebuildable from its config, and the weights load strictly into the rebuilt model
    assert student.config.noise_channels == student.noise_channels == 1
    rebuilt = UNetModelSwin(**kwargs, noise_channels=1)
    rebuilt.load_state_dict(student.state_dict(), strict=True)

    with pytest.raises(ValueError, match="noise"):
        student(x, t, lq=lq)
    with pytest.raises(ValueError, match="noise"):
        small(x, t, lq=lq, noise=noise)
    with pytest.raises(ValueError, match="lq"):
        small(x, t)
    with pytest.raises(ValueError, match="teacher without noise"):
        build_student(student)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lq_size": 128}, "lq_size != image_size"),
        ({"resblock_updown": True}, "resblock_updown"),
        ({"dims": 3}, "dims != 2"),
        ({"cond_mask": True}, "cond_mask"),
        ({"use_fp16": True}, "autocast"),
        ({"conv_resample": False}, "conv_resample"),
        ({"num_res_blocks": [2, 2]}, "one entry per channel_mult level"),
    ],
)
def test_unsupported_configs_raise(golden, override, message):
    kwargs, _, _ = golden
    with pytest.raises(ValueError, match=message):
        build_unet({**kwargs, **override})


def test_feature_map_not_divisible_by_window_raises(small):
    x = torch.zeros(1, 3, 40, 40)  # level 0 is fine (40 % 4 == 0), level 1 has 20x20, level 2 has 10x10
    with pytest.raises(ValueError, match="not divisible by the window"):
        small(x, torch.zeros(1, dtype=torch.long), lq=x)


def test_swin_depths_drop_only_the_last_swin_blocks_of_their_level():
    """swin_depths=(1, 2): the level-0 Swin layers keep their first block, every other weight keeps its name,
    and the network computes the full one with those layers' second blocks skipped."""
    torch.manual_seed(0)
    kwargs = dict(image_size=8, model_channels=32, channel_mult=[1, 1], num_res_blocks=[1, 1],
                  attention_resolutions=[8, 4], window_size=4, lq_size=8, swin_embed_dim=32)  # fmt: skip
    full = UNetModelSwin(**kwargs)
    pruned = UNetModelSwin(**kwargs, swin_depths=[1, 2])
    dropped = set(full.state_dict()) - set(pruned.state_dict())
    layers = {k.split(".blocks.")[0] for k in dropped}
    assert layers == {"input_blocks.1.1", "output_blocks.2.1"}  # level 0, down and up
    assert {k.split(".blocks.")[1].split(".")[0] for k in dropped} == {"1"}
    assert len(full.middle_block[1].blocks) == len(pruned.middle_block[1].blocks) == 2  # the last level's
    pruned.load_state_dict({k: v for k, v in full.state_dict().items() if k not in dropped})
    x, lq = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    t = torch.tensor([3])
    with torch.no_grad():
        for layer in layers:
            full.get_submodule(layer).blocks[1] = torch.nn.Identity()
        torch.testing.assert_close(pruned(x, t, lq=lq), full(x, t, lq=lq), atol=0, rtol=0)
    for bad in ([1], [0, 2]):
        with pytest.raises(ValueError, match="swin_depths"):
            UNetModelSwin(**kwargs, swin_depths=bad)
