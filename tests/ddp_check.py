"""Run by test_trainers under torchrun: 2 CPU ranks train the autoencoder for 2 steps (gloo), then compare."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tests.trainer_setup import AE_MODEL, common_overrides
from training.config import load_config
from training.train_autoencoder import AutoencoderTrainConfig, AutoencoderTrainer


def main(workspace: Path) -> None:
    overrides = [*common_overrides(workspace, "ddp"), f"model={json.dumps(AE_MODEL)}", "data.crop_sizes=[32]",
                 "run.steps=2", "run.ckpt_every=2", "run.val_every=1000"]  # fmt: skip
    cfg = load_config(AutoencoderTrainConfig, None, overrides)
    trainer = AutoencoderTrainer(cfg, cfg.run)
    init = torch.cat([p.detach().flatten().clone() for p in trainer.modules["autoencoder"].parameters()])
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.modules["autoencoder"].parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() == 0:
        report = {
            "world_size": dist.get_world_size(),
            "max_abs_diff": float((gathered[0] - gathered[1]).abs().max()),
            "changed_from_init": bool((flat - init).abs().max() > 0),
        }
        (workspace / "ddp" / "replicas.json").write_text(json.dumps(report))
    # Both ranks reach here before either tears gloo down: a rank that destroyed the group while its peer
    # was still in the all_gather aborted at exit now and then ("terminate called without an active
    # exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
