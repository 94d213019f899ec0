"""The training loop shared by the autoencoder, teacher and distillation trainers.

It owns what every run needs and nothing model-specific: devices and DDP, per-step seeding (so a
resumed run follows the same trajectory), the optimiser/LR schedule bookkeeping, EMA, checkpoints
(safetensors weights + a weights-only `state.pt`), JSONL and TensorBoard logs, a progress bar,
periodic validation and a clean stop on Ctrl-C / SIGTERM.

Subclasses implement `build()`, `train_step(step, generator)` and `validate(step)`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from training.config import config_hash, to_dict
from training.data.loader import DataConfig, step_batches
from training.data.valset import load_val_set
from training.validation import score_pipeline

LATEST_FILE = "latest.txt"


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    cosine: bool = False  # cosine decay from lr to lr_min after warmup, over the rest of the run
    lr_min: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables

    def validate(self) -> None:
        if self.lr <= 0 or len(self.betas) != 2:
            raise ValueError("optim: lr must be > 0 and betas a pair")


@dataclass
class RunConfig:
    out_dir: str = "runs/untitled"
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 250
    keep_checkpoints: int = 2
    ema_decay: float = 0.999
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # bf16 autocast on CUDA (never on CPU, where it is emulated)
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1 or self.ckpt_every < 1 or self.log_every < 1 or self.val_every < 1:
            raise ValueError("run: steps, ckpt_every, log_every and val_every must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("run: ema_decay must be in [0, 1)")


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Linear warmup, then constant or cosine down to lr_min (as a factor of lr)."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if not cfg.cosine:
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        floor = cfg.lr_min / cfg.lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), module.buffers(), strict=True):
            ema_b.copy_(b)


def step_generator(
    seed: int, step: int, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """An independent generator per (seed, step, rank): resuming replays the same draws."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class Trainer:
    """Base trainer; see the module docstring for the contract with subclasses."""

    #: names of the modules whose weights are checkpointed; subclasses set them in build()
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    ema: EMA | None
    ema_of: str | None  # name in `modules` the EMA tracks
    #: `rsd train <stage>` of a short stage that runs as one process: refused under DDP
    single_process_stage: str | None = None

    def __init__(self, cfg, run: RunConfig):
        self.cfg = cfg
        self.run = run
        self.rank, self.world_size = self._init_distributed()
        self.device = self._pick_device()
        if run.threads and self.device.type == "cpu":
            torch.set_num_threads(run.threads)
        torch.manual_seed(run.seed + self.rank)
        self.out_dir = Path(run.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.step = 0
        self.cpu_seconds = 0.0  # process CPU time spent training, summed over resumes
        self._stop_requested = False
        self.modules, self.optimizers, self.schedulers = {}, {}, {}
        self.ema, self.ema_of = None, None
        self._hr_batches = None
        if self.single_process_stage and self.world_size > 1:
            raise ValueError(
                f"rsd train {self.single_process_stage} runs as one process (a short stage; no DDP)"
            )
        self.build()
        self._writer = None

    # -- subclass hooks --------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        raise NotImplementedError

    def validate(self, step: int) -> dict[str, float]:
        return {}

    def export(self) -> None:
        """Write the EMA model as a model directory (`out_dir/model`)."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------------------
    def validate_pipeline(
        self, pipe, data: DataConfig, step: int, steps: str, label: str
    ) -> dict[str, float]:
        """Score `pipe` (an SRPipeline of the EMA weights) on the fixed validation set against bicubic,
        write the sample grid, then export the model directory."""
        pairs = load_val_set(data.val_dir)[: data.val_max_images or None]
        grid_path = self.out_dir / "samples" / f"step_{step:08d}.png"
        metrics = score_pipeline(pipe, pairs, self.device, steps, label, grid_path)
        self.export()
        return metrics

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.device.type == "cuda" and self.run.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def add_optimizer(self, name: str, params, cfg: OptimConfig) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.optimizers[name] = opt
        self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, self.run.steps))
        return opt

    def wrap_ddp(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def optimizer_step(self, name: str, loss: torch.Tensor, params, grad_clip: float) -> float:
        """Backward, clip, step and schedule one optimiser; returns the pre-clip grad norm."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in params if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        opt.step()
        self.schedulers[name].step()
        return float(norm)

    def next_hr_batch(self, data: DataConfig, index: int, end: int) -> torch.Tensor:
        """HR batch number `index` (B, 3, S, S) in [0, 1] on the device; the iterator starts where a resumed
        run stands, so batch `index` is the same whether or not the run was interrupted."""
        if self._hr_batches is None:
            self._hr_batches = step_batches(
                [data.train_dir, *data.extra_train_dirs],
                batch_size=data.batch_size,
                crop_sizes=data.crop_sizes,
                seed=self.run.seed,
                start=index,
                end=end,
                rank=self.rank,
                num_workers=data.num_workers,
                scales=data.scales,
                augment=data.augment,
            )
        return next(self._hr_batches).to(self.device, non_blocking=True)

    def broadcast_(self, tensor: torch.Tensor) -> None:
        """Copy rank 0's value of a tensor changed outside the optimiser (re-seeded codes) to all ranks."""
        if self.world_size > 1:
            dist.broadcast(tensor.data, src=0)

    def tracked_ema(self, name: str) -> None:
        self.ema_of = name
        self.ema = EMA(unwrap(self.modules[name]), self.run.ema_decay)

    # -- infrastructure --------------------------------------------------------------------------
    def _init_distributed(self) -> tuple[int, int]:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.run.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        if world > 1:
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _pick_device(self) -> torch.device:
        want = self.run.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("run.device=cuda but no CUDA device is available")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device(want)

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with (self.out_dir / "log.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out_dir / "tb"))
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, int | float):
                self._writer.add_scalar(key, value, record["step"])
        self._writer.flush()

    def save_checkpoint(self) -> Path | None:
        if not self.is_main:
            return None
        path = self.ckpt_dir / f"step_{self.step:08d}"
        tmp = path.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, module in self.modules.items():
            state = {k: v.detach().contiguous().cpu() for k, v in unwrap(module).state_dict().items()}
            save_file(state, str(tmp / f"{name}.safetensors"))
        if self.ema is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.ema.module.state_dict().items()}
            save_file(state, str(tmp / "ema.safetensors"))
        torch.save(
            {
                "step": self.step,
                "cpu_seconds": self.cpu_seconds,
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
                "torch_rng": torch.get_rng_state(),
                "config_hash": config_hash(self.cfg),
            },
            tmp / "state.pt",
        )
        (tmp / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2, default=str))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        (self.ckpt_dir / LATEST_FILE).write_text(path.name + "\n")
        kept = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir() and p.suffix != ".tmp")
        for old in kept[: -self.run.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def latest_checkpoint(self) -> Path | None:
        marker = self.ckpt_dir / LATEST_FILE
        if not marker.is_file():
            return None
        path = self.ckpt_dir / marker.read_text().strip()
        return path if path.is_dir() else None

    def load_checkpoint(self, path: Path) -> None:
        for name, module in self.modules.items():
            unwrap(module).load_state_dict(
                load_file(str(path / f"{name}.safetensors"), device=str(self.device))
            )
        if self.ema is not None:
            self.ema.module.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(self.device)))
        state = torch.load(path / "state.pt", map_location=self.device, weights_only=True)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step = int(state["step"])
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            self._stop_requested = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, request_stop)
        return previous

    def _finished_model_step(self) -> int | None:
        """The step recorded in the run's exported model directory, if there is one."""
        config = self.out_dir / "model" / "config.json"
        if not config.is_file():
            return None
        return json.loads(config.read_text()).get("meta", {}).get("step")

    def fit(self) -> dict:
        """Run (or resume) until run.steps; returns the last validation metrics."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        resume = self.latest_checkpoint()
        finished = self._finished_model_step()
        if resume is None and finished is not None and finished >= self.run.steps:
            # A clone carries finished stages as model directories only (checkpoints are too big to commit).
            self._say(f"{self.out_dir / 'model'} already holds this run at step {finished}; nothing to train")
            return {}
        if resume is not None:
            self.load_checkpoint(resume)
            self._say(f"resumed from {resume} at step {self.step}")
        if self.is_main and self.step < self.run.steps:  # a finished run keeps the config it ran with
            (self.out_dir / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2, default=str))
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = self._install_signal_handlers() if in_main_thread else {}
        metrics: dict = {}
        progress = self._progress()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        last_log_wall, last_log_step = wall_start, self.step
        try:
            while self.step < self.run.steps and not self._stop_requested:
                generator = step_generator(self.run.seed, self.step, self.rank, self.device)
                stats = self.train_step(self.step, generator)
                if self.ema is not None:
                    self.ema.update(unwrap(self.modules[self.ema_of]))
                self.step += 1
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix({k: f"{v:.4g}" for k, v in list(stats.items())[:4]})
                if self.step % self.run.log_every == 0:
                    now = time.perf_counter()
                    rate = (self.step - last_log_step) / max(now - last_log_wall, 1e-9)
                    last_log_wall, last_log_step = now, self.step
                    lrs = {f"lr/{k}": s.get_last_lr()[0] for k, s in self.schedulers.items()}
                    self._log({"step": self.step, "time": time.time(), "it_per_s": rate, **stats, **lrs})
                if self.step % self.run.ckpt_every == 0 or self.step == self.run.steps:
                    self.cpu_seconds += time.process_time() - cpu_start
                    cpu_start = time.process_time()
                    self.save_checkpoint()
                if self.step % self.run.val_every == 0 or self.step == self.run.steps:
                    metrics = self._run_validation()
        finally:
            self.cpu_seconds += time.process_time() - cpu_start
            if self._stop_requested:
                self.save_checkpoint()
                self._say(f"stopped at step {self.step}; checkpoint saved, run again to resume")
            if progress is not None:
                progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._writer is not None:
                self._writer.close()
        return metrics

    def _run_validation(self) -> dict:
        if not self.is_main:
            return {}
        metrics = self.validate(self.step)
        if metrics:
            self._log({"step": self.step, "time": time.time(), **{f"val/{k}": v for k, v in metrics.items()}})
            self._say(
                f"step {self.step} validation: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            )
        return metrics

    def _progress(self):
        if not (self.is_main and self.run.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.run.steps, initial=self.step, dynamic_ncols=True, file=sys.stderr)

    def _say(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)
