"""Residual shifting diffusion (ResShift), in the latent space of the VQ-f4 autoencoder.

Notation follows PAPER.md section 1 (0-indexed t = 0..T-1, as in the official code):

    q(x_t | x_0, y)   = N(x_0 + eta_t (y - x_0), kappa^2 eta_t I)                 (marginal, eq. 2)
    q(x_{t-1} | x_t, x_0, y) = N(eta_{t-1}/eta_t x_t + alpha_t/eta_t x_0, beta_t I)  (posterior, eq. 3)
    beta_t = kappa^2 eta_{t-1}/eta_t alpha_t,  alpha_t = eta_t - eta_{t-1}
    p(x_T | y)        = N(y, kappa^2 eta_T I)                                       (prior)

The network predicts x_0 from the scaled input x_t / sqrt(kappa^2 eta_t + 1). Every random draw is an
argument, so sampling is reproducible and testable against the official code's vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

# (x_scaled, t, lq) -> predicted x_0; t is a (B,) int64 tensor of step indices.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScheduleConfig:
    """The `exponential` eta schedule of the official configs (v3 defaults: 4 steps)."""

    steps: int = 4
    kappa: float = 2.0
    power: float = 0.3
    min_noise_level: float = 0.2
    etas_end: float = 0.99

    @classmethod
    def from_official(cls, params: dict) -> ScheduleConfig:
        """Build from an official `diffusion.params` dict (as in the schedule JSON files)."""
        if params.get("schedule_name", "exponential") != "exponential":
            raise ValueError(f"only the 'exponential' schedule is supported, got {params['schedule_name']!r}")
        if params.get("predict_type", "xstart") != "xstart":
            raise ValueError("only predict_type 'xstart' is supported")
        return cls(
            steps=int(params["steps"]),
            kappa=float(params["kappa"]),
            power=float(params.get("schedule_kwargs", {}).get("power", 0.3)),
            min_noise_level=float(params["min_noise_level"]),
            etas_end=float(params["etas_end"]),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def exponential_sqrt_etas(cfg: ScheduleConfig) -> np.ndarray:
    """sqrt(eta_t) = etas_start * increaser^((t/(T-1))^p (T-1)), geometric in sqrt(eta) (PAPER.md 1.2)."""
    steps = cfg.steps
    etas_start = min(cfg.min_noise_level / cfg.kappa, cfg.min_noise_level)
    if steps == 1:
        return np.array([cfg.etas_end], dtype=np.float64)
    increaser = math.exp(math.log(cfg.etas_end / etas_start) / (steps - 1))
    power_t = np.linspace(0.0, 1.0, steps, dtype=np.float64) ** cfg.power * (steps - 1)
    return etas_start * increaser**power_t


class ResShiftSchedule:
    """Named float64 arrays of the schedule plus the process maths on torch tensors.

    Arrays (length T, index t = 0..T-1): `sqrt_etas`, `etas`, `etas_prev`, `alpha`,
    `posterior_variance`, `posterior_log_variance_clipped`, `posterior_mean_coef1` (multiplies x_t),
    `posterior_mean_coef2` (multiplies x_0), `input_scale` (1 / sqrt(kappa^2 eta_t + 1)).
    """

    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg
        self._device_tables: dict[tuple[int, torch.device], torch.Tensor] = {}
        self.kappa = cfg.kappa
        self.num_timesteps = cfg.steps
        self.sqrt_etas = exponential_sqrt_etas(cfg)
        self.etas = self.sqrt_etas**2
        self.etas_prev = np.append(0.0, self.etas[:-1])
        self.alpha = self.etas - self.etas_prev
        self.posterior_variance = cfg.kappa**2 * self.etas_prev / self.etas * self.alpha
        # t = 0 has zero variance (no noise is added there); the official code clips it to var[1].
        clipped = np.append(self.posterior_variance[1:2], self.posterior_variance[1:])
        self.posterior_log_variance_clipped = np.log(clipped) if self.num_timesteps > 1 else np.zeros(1)
        self.posterior_mean_coef1 = self.etas_prev / self.etas
        self.posterior_mean_coef2 = self.alpha / self.etas
        self.input_scale = 1.0 / np.sqrt(cfg.kappa**2 * self.etas + 1.0)

    # -- helpers ------------------------------------------------------------------------------
    def _at(self, array: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """array[t] as a (B, 1, 1, 1) tensor broadcastable against `like`.

        The array is copied to each device once and kept: a host-to-device copy inside a forward pass
        would break CUDA graph capture (the service's torch backend).
        """
        key = (id(array), like.device)
        if key not in self._device_tables:
            self._device_tables[key] = torch.as_tensor(array, dtype=torch.float64, device=like.device)
        values = self._device_tables[key][t.to(like.device)]
        return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def timesteps(self, batch: int, t: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((batch,), t, dtype=torch.int64, device=device)

    # -- forward process -----------------------------------------------------------------------
    def q_sample(
        self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t = x_0 + eta_t (y - x_0) + kappa sqrt(eta_t) noise (marginal, PAPER.md 1.1)."""
        eta = self._at(self.etas, t, x0)
        sqrt_eta = self._at(self.sqrt_etas, t, x0)
        return x0 + eta * (y - x0) + self.kappa * sqrt_eta * noise

    def prior_sample(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_T = y + kappa sqrt(eta_T) noise."""
        return y + self.kappa * float(self.sqrt_etas[-1]) * noise

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network sees x_t / sqrt(kappa^2 eta_t + 1) (official `_scale_input`, latent case)."""
        return x_t * self._at(self.input_scale, t, x_t)

    # -- reverse process -----------------------------------------------------------------------
    def posterior_mean(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0, y) = eta_{t-1}/eta_t x_t + alpha_t/eta_t x_0."""
        return (
            self._at(self.posterior_mean_coef1, t, x_t) * x_t
            + self._at(self.posterior_mean_coef2, t, x_t) * x0
        )

    def posterior_std(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Standard deviation used by p_sample (from the clipped log-variance)."""
        return torch.exp(0.5 * self._at(self.posterior_log_variance_clipped, t, like))

    def reverse_step(
        self,
        denoiser: Denoiser,
        x_t: torch.Tensor,
        t: torch.Tensor,
        lq: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step at per-sample timesteps t (B,); returns (x_{t-1}, predicted x_0): the posterior
        mean given the predicted x_0, plus posterior_std * noise unless noise is None."""
        x0_pred = denoiser(self.scale_input(x_t, t), t, lq)
        mean = self.posterior_mean(x_t, x0_pred, t)
        if noise is None:
            return mean, x0_pred
        return mean + self.posterior_std(t, x_t) * noise, x0_pred

    def p_sample(
        self, denoiser: Denoiser, x_t: torch.Tensor, t: int, lq: torch.Tensor, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step; returns (x_{t-1}, predicted x_0). `noise` is unused at t = 0."""
        if t > 0 and noise is None:
            raise ValueError(f"p_sample at t={t} needs a noise tensor")
        tt = self.timesteps(x_t.shape[0], t, x_t.device)
        return self.reverse_step(denoiser, x_t, tt, lq, noise if t > 0 else None)

    def sample(
        self,
        denoiser: Denoiser,
        y: torch.Tensor,
        lq: torch.Tensor,
        prior_noise: torch.Tensor,
        step_noises: Sequence[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """T-step ancestral sampling from x_T = prior(y); returns x_0 (no clipping in latent space).

        `step_noises[k]` is the noise of the step at t = T-1-k (ordered as the loop runs); when omitted
        they are drawn from `generator`.
        """
        x = self.prior_sample(y, prior_noise)
        for k, t in enumerate(range(self.num_timesteps - 1, -1, -1)):
            if t == 0:
                noise = None
            elif step_noises is not None:
                noise = step_noises[k]
            else:
                noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
            x, _ = self.p_sample(denoiser, x, t, lq, noise)
        return x

    def one_step(
        self, denoiser: Denoiser, y: torch.Tensor, lq: torch.Tensor, prior_noise: torch.Tensor
    ) -> torch.Tensor:
        """The one-step path of SinSR/RSD: x_0 = f(scale(x_T), T-1, lq) with x_T = prior(y)."""
        x_T = self.prior_sample(y, prior_noise)
        tt = self.timesteps(y.shape[0], self.num_timesteps - 1, y.device)
        return denoiser(self.scale_input(x_T, tt), tt, lq)

    def rollout(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        y: torch.Tensor,
        lq: torch.Tensor,
        t: torch.Tensor,
        steps: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """x_t reached by the model's own reverse steps from x_s ~ q(x_s | x_0, y), s = min(t + steps, T-1).

        The sampler feeds the network states its own earlier steps drew; training on them (scheduled
        sampling against exposure bias) teaches it not to trust detail it drew itself. Per sample: a
        sample whose s is reached sooner (t near T-1) stops there.
        """

        def randn() -> torch.Tensor:
            return torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)

        current = (t + steps).clamp(max=self.num_timesteps - 1)
        x = self.q_sample(x0, y, current, randn())
        for _ in range(steps):
            active = current > t
            if not active.any():
                break
            stepped, _ = self.reverse_step(denoiser, x, current, lq, randn())
            x = torch.where(active.view(-1, *([1] * (x.dim() - 1))), stepped, x)
            current = current - active.long()
        return x

    def training_loss(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        y: torch.Tensor,
        lq: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        x_t: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample x_0-prediction MSE (ResShift objective with w_t = 1); returns (loss (B,), x0_pred).

        `x_t` replaces the forward-process input q_sample(x0, y, t, noise) when given (see `rollout`).
        """
        if x_t is None:
            x_t = self.q_sample(x0, y, t, noise)
        x0_pred = denoiser(self.scale_input(x_t, t), t, lq)
        return (x0_pred - x0).pow(2).flatten(1).mean(1), x0_pred
