import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.diffusion import ResShiftSchedule, ScheduleConfig

SCHEDULE_ARRAYS = {
    "sqrt_etas": "sqrt_etas",
    "etas": "etas",
    "etas_prev": "etas_prev",
    "alpha": "alpha",
    "posterior_variance": "posterior_variance",
    "posterior_log_variance_clipped": "posterior_log_variance_clipped",
    "posterior_mean_coef1": "posterior_mean_coef1",
    "posterior_mean_coef2": "posterior_mean_coef2",
}


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_schedule_matches_official_arrays(reference_dir, version):
    ref = json.loads((reference_dir / f"resshift_schedule_{version}.json").read_text())
    schedule = ResShiftSchedule(ScheduleConfig.from_official(ref["diffusion_params"]))
    assert schedule.num_timesteps == ref["num_timesteps"]
    for ours, theirs in SCHEDULE_ARRAYS.items():
        np.testing.assert_allclose(getattr(schedule, ours), ref[theirs], rtol=0, atol=1e-9, err_msg=ours)
    np.testing.assert_allclose(1.0 / schedule.input_scale, ref["model_input_scale_divisor"], atol=1e-9)
    posterior_std = np.exp(0.5 * schedule.posterior_log_variance_clipped)
    np.testing.assert_allclose(posterior_std, ref["posterior_std_used_in_p_sample"], atol=1e-9)


def test_q_sample_endpoints():
    schedule = ResShiftSchedule(ScheduleConfig())
    x0, y = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    t_last = schedule.timesteps(1, schedule.num_timesteps - 1)
    # Without noise, x_T sits at x0 + eta_T (y - x0): almost all the way to y.
    x_T = schedule.q_sample(x0, y, t_last, torch.zeros_like(x0))
    assert torch.allclose(x_T, torch.full_like(x0, schedule.etas[-1]))
    prior = schedule.prior_sample(y, torch.ones_like(y))
    assert torch.allclose(prior, y + schedule.kappa * schedule.sqrt_etas[-1])


def test_posterior_at_t0_is_x0():
    schedule = ResShiftSchedule(ScheduleConfig())
    x_t, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean = schedule.posterior_mean(x_t, x0, schedule.timesteps(2, 0))
    assert torch.equal(mean, x0)


def test_rollout_with_an_exact_denoiser_keeps_the_forward_marginal():
    """With a denoiser that returns the true x_0, each reverse step samples q(x_{t-1} | x_t, x_0), so the
    rolled-out x_t has the forward marginal: mean x_0 + eta_t (y - x_0), std kappa sqrt(eta_t)."""
    schedule = ResShiftSchedule(ScheduleConfig(steps=15))
    n = 20000
    x0, y = torch.zeros(n, 1, 1, 1), torch.ones(n, 1, 1, 1)
    t = torch.full((n,), 2)
    steps_taken = []

    def exact(x, tt, lq):
        steps_taken.append(tt[0].item())
        return x0

    x_t = schedule.rollout(exact, x0, y, None, t, 3, torch.Generator().manual_seed(0))
    assert steps_taken == [5, 4, 3]
    assert abs(x_t.mean().item() - schedule.etas[2]) < 0.01
    assert abs(x_t.std().item() / (schedule.kappa * schedule.sqrt_etas[2]) - 1) < 0.02


def test_rollout_stops_each_sample_at_its_own_timestep():
    schedule = ResShiftSchedule(ScheduleConfig())  # 4 steps: t + 2 passes T-1 for both samples
    last = schedule.num_timesteps - 1
    x0, y = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    t = torch.tensor([last, last - 1])  # the first starts at T-1 and takes no step; the second takes one
    calls = []

    def exact(x, tt, lq):
        calls.append(tt)
        return x0

    x_t = schedule.rollout(exact, x0, y, None, t, 2, torch.Generator().manual_seed(0))
    assert [tt.tolist() for tt in calls] == [[last, last]]  # one reverse step, then both are done
    first_noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    expected_first = schedule.q_sample(x0, y, torch.full((2,), last), first_noise)
    assert torch.equal(x_t[0], expected_first[0])
    assert not torch.equal(x_t[1], expected_first[1])


def test_schedule_lookups_reuse_one_table_per_device():
    """CUDA graph capture (the torch backend) fails on any host-to-device copy inside the forward pass,
    so each schedule array reaches a device once; later lookups index the kept table."""
    schedule = ResShiftSchedule(ScheduleConfig())
    x = torch.randn(2, 3, 4, 4)
    t = schedule.timesteps(2, 3)
    first = schedule.scale_input(x, t)
    tables = dict(schedule._device_tables)
    second = schedule.scale_input(x, t)
    assert torch.equal(first, second)
    assert schedule._device_tables.keys() == tables.keys()
    assert all(schedule._device_tables[k] is v for k, v in tables.items())
    assert torch.allclose(first, x * schedule.input_scale[3])


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="exponential"):
        ScheduleConfig.from_official({"schedule_name": "linear", "steps": 4})


def test_golden_pipeline_four_steps_and_one_step(reference_dir):
    """4-step sampling with the injected noises, the decode and the one-step path (official v3 schedule)."""
    from training.models import build_autoencoder, build_unet

    cfg = json.loads((reference_dir / "golden" / "config.json").read_text())
    golden = load_file(reference_dir / "golden" / "pipeline_small.io.safetensors")
    unet = build_unet(cfg["unet_kwargs"]).eval()
    unet.load_state_dict(load_file(reference_dir / "golden" / "unet_small.weights.safetensors"), strict=True)
    vq = build_autoencoder(cfg["vq_kwargs"]).eval()
    vq.load_state_dict(load_file(reference_dir / "golden" / "vq_small.weights.safetensors"), strict=True)
    schedule = ResShiftSchedule(ScheduleConfig.from_official(cfg["diffusion_kwargs"]))
    tol = cfg["suggested_tolerance"]["pipeline_latents_and_images"]

    def denoiser(x, t, lq):
        return unet(x, t, lq=lq)

    lq = golden["y0_lq"]
    with torch.no_grad():
        up = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic")
        torch.testing.assert_close(up, golden["y0_bicubic_x4"], **tol)
        z_y = vq.encode(golden["y0_bicubic_x4"])
        torch.testing.assert_close(z_y, golden["z_y"], **tol)
        z_y = golden["z_y"]  # feed stored tensors forward so errors do not compound

        x_T = schedule.prior_sample(z_y, golden["noise_xT"])
        torch.testing.assert_close(x_T, golden["x_T"], **tol)
        t_last = schedule.timesteps(1, 3)
        torch.testing.assert_close(schedule.scale_input(x_T, t_last), golden["x_T_scaled"], **tol)

        x = golden["x_T"]
        for t in (3, 2, 1, 0):
            noise = golden[f"step_t{t}.noise"] if t > 0 else None
            x_next, x0_pred = schedule.p_sample(denoiser, x, t, lq, noise)
            torch.testing.assert_close(x0_pred, golden[f"step_t{t}.pred_xstart"], **tol)
            torch.testing.assert_close(x_next, golden[f"step_t{t}.sample"], **tol)
            x = golden[f"step_t{t}.sample"]

        noises = [golden[f"step_t{t}.noise"] for t in (3, 2, 1)] + [None]
        z0 = schedule.sample(denoiser, z_y, lq, golden["noise_xT"], noises)
        torch.testing.assert_close(z0, golden["z0_final"], **tol)
        torch.testing.assert_close(vq.decode(golden["z0_final"]), golden["decoded"], **tol)
        decoded = vq.decode(golden["z0_final"])
        torch.testing.assert_close(decoded.clamp(-1, 1), golden["decoded_clamped"], **tol)

        one = schedule.one_step(denoiser, z_y, lq, golden["noise_xT"])
        torch.testing.assert_close(one, golden["onestep_pred_xstart"], **tol)
        torch.testing.assert_close(vq.decode(golden["onestep_pred_xstart"]), golden["onestep_decoded"], **tol)
