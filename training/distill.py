"""RSD losses (PAPER.md section 2), as functions of network outputs so they can be tested on small tensors.

Notation: x0_hat = student sample (latent), f_teacher = f*(x_t, y, t), f_fake = f_phi(x_t, y, t).
Every loss is per sample (mean over C, H, W), w_t = 1 as in ResShift and RSD.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from training.diffusion import ResShiftSchedule

# (x_t, t, lq) -> x0 prediction, the network applied to its unscaled input
X0Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _mean_per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1).mean(1)


def evenly_spaced_timesteps(num_timesteps: int, count: int) -> list[int]:
    """N student timesteps 1 < t_1 < ... < t_N = T, evenly placed (section 2.4), as 0-based indices.

    t_n = ceil(n T / N) (1-based); T = 15, N = 4 gives {4, 8, 12, 15}, i.e. indices [3, 7, 11, 14]. The paper
    does not publish the set; this is one of the two evenly spaced candidates and it always contains T.
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"multistep count must be in [1, {num_timesteps}], got {count}")
    return [math.ceil(n * num_timesteps / count) - 1 for n in range(1, count + 1)]


def fake_objective(f_fake: torch.Tensor, f_teacher: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """Proposition 3.1 (eq. 10): ||f_phi||^2 - ||f*||^2 - 2 <f_phi - f*, x0_hat>; L_theta = -min_phi of it."""
    inner = f_fake.pow(2) - f_teacher.pow(2) - 2 * (f_fake - f_teacher) * x0_hat
    return _mean_per_sample(inner)


def theta_loss(
    f_teacher: torch.Tensor, f_fake: torch.Tensor, x0_hat: torch.Tensor, sid_normalization: bool = True
) -> torch.Tensor:
    """Student loss L_theta = -fake_objective = ||f* - x0_hat||^2 - ||f_phi - x0_hat||^2 (eq. 34).

    No stop-gradient: gradients reach the student through x0_hat and through the teacher's and the fake's
    inputs x_t(x0_hat). With SiD normalisation each sample is divided by mean |f* - x0_hat| (detached).
    """
    loss = -fake_objective(f_fake, f_teacher, x0_hat)
    if sid_normalization:
        loss = loss / (_mean_per_sample((f_teacher - x0_hat).abs()).detach() + 1e-8)
    return loss


def student_distillation_loss(
    schedule: ResShiftSchedule,
    x0_hat: torch.Tensor,
    z_y: torch.Tensor,
    lq: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    teacher: X0Fn,
    fake: X0Fn,
    sid_normalization: bool = True,
    stop_gradient: bool = False,
) -> torch.Tensor:
    """L_theta of student samples x0_hat: z_t ~ q(z_t | x0_hat, z_y), then `theta_loss` of both outputs.

    The networks' parameters must be frozen by the caller; their outputs are not detached unless
    `stop_gradient` (the VSD-like ablation), so the student also learns through their input Jacobians.
    """
    z_t = schedule.q_sample(x0_hat, z_y, t, noise)
    f_teacher, f_fake = teacher(z_t, t, lq), fake(z_t, t, lq)
    if stop_gradient:
        f_teacher, f_fake = f_teacher.detach(), f_fake.detach()
    return theta_loss(f_teacher.float(), f_fake.float(), x0_hat.float(), sid_normalization)


def fake_loss(f_fake: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """The fake ResShift's loss: the plain x0-MSE on student samples (treated as data)."""
    return _mean_per_sample((f_fake - x0_hat.detach()).pow(2))


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN (DMD2): softplus(-D(real)) + softplus(D(fake)), batch mean."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss softplus(-D(fake)), per sample (B,)."""
    return _mean_per_sample(F.softplus(-fake_logits))
