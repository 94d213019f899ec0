"""The mathematics of RSD (PAPER.md 2.2) on small tensors and small networks."""

import copy

import pytest
import torch

from training.diffusion import ResShiftSchedule, ScheduleConfig
from training.distill import (
    evenly_spaced_timesteps,
    fake_loss,
    fake_objective,
    student_distillation_loss,
    theta_loss,
)
from training.models import build_student, build_unet

SMALL_UNET = dict(
    image_size=8, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=[1, 1],
    attention_resolutions=[8], dropout=0, channel_mult=[1, 1], conv_resample=True, dims=2, use_fp16=False,
    num_head_channels=16, use_scale_shift_norm=True, resblock_updown=False, swin_depth=2, swin_embed_dim=32,
    window_size=4, mlp_ratio=4, cond_lq=True, lq_size=8,
)  # fmt: skip
SCHEDULE = ResShiftSchedule(ScheduleConfig(steps=15, min_noise_level=0.04))


def x0_fn(unet):
    return lambda x, t, lq: unet(SCHEDULE.scale_input(x, t), t, lq=lq)


@pytest.fixture()
def nets():
    torch.manual_seed(0)
    teacher = build_unet(SMALL_UNET).requires_grad_(False)
    student = build_student(teacher, noise_channels=1).requires_grad_(True)
    # a trained student differs from the teacher: perturb it so gradients are generic
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fake = copy.deepcopy(teacher).requires_grad_(True)
    with torch.no_grad():
        for p in fake.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher, student, fake


def batch(seed=1, b=2):
    g = torch.Generator().manual_seed(seed)
    z_y = torch.randn(b, 3, 8, 8, generator=g)
    z_tn = torch.randn(b, 3, 8, 8, generator=g)
    lq = torch.rand(b, 3, 8, 8, generator=g) * 2 - 1
    t_n = torch.full((b,), 14)
    t = torch.randint(15, (b,), generator=g)
    return z_y, z_tn, lq, t_n, t, torch.randn(b, 3, 8, 8, generator=g), torch.randn(b, 1, 8, 8, generator=g)


def student_sample(student, z_tn, t_n, lq, eps):
    return student(SCHEDULE.scale_input(z_tn, t_n), t_n, lq=lq, noise=eps)


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=False)


def test_fake_gradient_equals_plain_resshift_loss_on_generator_samples(nets):
    """(a) d/dphi of the Proposition 3.1 objective == d/dphi of ||f_phi(x_t) - x0_hat||^2."""
    teacher, student, fake = nets
    z_y, z_tn, lq, t_n, t, noise, eps = batch()
    with torch.no_grad():
        x0_hat = student_sample(student, z_tn, t_n, lq, eps)
    z_t = SCHEDULE.q_sample(x0_hat, z_y, t, noise)
    f_teacher = x0_fn(teacher)(z_t, t, lq)
    params = list(fake.parameters())
    prop31 = grads(fake_objective(x0_fn(fake)(z_t, t, lq), f_teacher, x0_hat).mean(), params)
    plain = grads(fake_loss(x0_fn(fake)(z_t, t, lq), x0_hat).mean(), params)
    for a, b in zip(prop31, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert any(a.abs().max() > 0 for a in prop31)


def test_student_gradient_vanishes_when_fake_equals_teacher(nets):
    """(b) f_phi == f*: L_theta is identically zero, so is its student gradient."""
    teacher, student, _ = nets
    fake = copy.deepcopy(teacher)
    z_y, z_tn, lq, t_n, t, noise, eps = batch()
    x0_hat = student_sample(student, z_tn, t_n, lq, eps)
    loss = student_distillation_loss(SCHEDULE, x0_hat, z_y, lq, t, noise, x0_fn(teacher), x0_fn(fake)).mean()
    for g in grads(loss, list(student.parameters())):
        assert g.abs().max() == 0


def test_theta_loss_is_difference_of_squared_errors():
    """(c) L_theta == ||f* - x0_hat||^2 - ||f_phi - x0_hat||^2 computed directly."""
    g = torch.Generator().manual_seed(3)
    f_teacher, f_fake, x0_hat = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    direct = ((f_teacher - x0_hat) ** 2 - (f_fake - x0_hat) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(theta_loss(f_teacher, f_fake, x0_hat, sid_normalization=False), direct)
    normalised = theta_loss(f_teacher, f_fake, x0_hat, sid_normalization=True)
    torch.testing.assert_close(normalised, direct / ((f_teacher - x0_hat).abs().flatten(1).mean(1) + 1e-8))


def test_gradients_flow_through_teacher_and_fake(nets):
    """(d) The RSD student gradient differs from the stop-gradient (VSD-like) one."""
    teacher, student, fake = nets
    fake.requires_grad_(False)
    z_y, z_tn, lq, t_n, t, noise, eps = batch()
    params = list(student.parameters())
    losses = {}
    for stop in (False, True):
        x0_hat = student_sample(student, z_tn, t_n, lq, eps)
        loss = student_distillation_loss(
            SCHEDULE, x0_hat, z_y, lq, t, noise, x0_fn(teacher), x0_fn(fake), stop_gradient=stop
        ).mean()
        losses[stop] = grads(loss, params)
    full = torch.cat([g.flatten() for g in losses[False]])
    stopped = torch.cat([g.flatten() for g in losses[True]])
    assert full.norm() > 0 and stopped.norm() > 0
    relative = (full - stopped).norm() / full.norm()
    assert relative > 0.05, f"gradients through f* and f_phi should matter, relative change {relative:.3g}"


def test_noise_channel_student_reproduces_teacher_at_init():
    """(e) build_student: the zero-initialised noise channel leaves the teacher's function unchanged."""
    torch.manual_seed(0)
    teacher = build_unet(SMALL_UNET).eval()
    student = build_student(teacher, noise_channels=1).eval()
    _, z_tn, lq, t_n, _, _, eps = batch()
    with torch.no_grad():
        expected = teacher(z_tn, t_n, lq=lq)
        for noise in (eps, 10 * torch.randn_like(eps)):
            assert torch.equal(student(z_tn, t_n, lq=lq, noise=noise), expected)


def test_student_timesteps_are_evenly_spaced_and_end_at_T():
    assert evenly_spaced_timesteps(15, 4) == [3, 7, 11, 14]
    assert evenly_spaced_timesteps(15, 1) == [14]
    assert evenly_spaced_timesteps(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        evenly_spaced_timesteps(15, 16)
