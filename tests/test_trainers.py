"""The trainers on small configs: a few real steps, resume, Ctrl-C, DDP, validation and export."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer_setup import AE_MODEL, UNET_MODEL, common_overrides, make_photo_folder
from training.checkpoint import load_model_dir
from training.config import ConfigError, load_config
from training.data.valset import make_val_set
from training.train_autoencoder import AutoencoderTrainConfig, AutoencoderTrainer
from training.train_decoder import DecoderTrainConfig, DecoderTrainer
from training.train_distill import DistillTrainConfig, DistillTrainer
from training.train_prune import PruneTrainConfig, PruneTrainer
from training.train_teacher import TeacherTrainConfig, TeacherTrainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    make_photo_folder(tmp / "photos")
    with pytest.warns(UserWarning, match="unreadable"):
        make_val_set(tmp / "photos", tmp / "val", mode="realesrgan", seed=0, crop_size=32)
    return tmp


def read_log(run_dir: Path) -> list[dict]:
    """The records of a run's log.jsonl, in order."""
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def ae_config(tmp: Path, out: str, steps: int, extra=()) -> AutoencoderTrainConfig:
    overrides = [
        *common_overrides(tmp, out),
        f"model={json.dumps(AE_MODEL)}",
        "data.crop_sizes=[32]",
        f"run.steps={steps}",
        "run.ckpt_every=2",
        "run.val_every=1000",
        "loss.dead_code_restart_every=2",
        *extra,
    ]
    return load_config(AutoencoderTrainConfig, REPO / "configs/tiny-x4/autoencoder.yaml", overrides)


def test_config_rejects_unknown_keys_and_bad_types(workspace):
    with pytest.raises(ConfigError, match=r"unknown config key.*optim\.learning_rate"):
        ae_config(workspace, "bad", 1, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"run\.steps: expected an integer"):
        ae_config(workspace, "bad", 1, ["run.steps=many"])
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number"):
        ae_config(workspace, "bad", 1, ["optim.lr=fast"])


def test_config_reads_scientific_notation_without_a_dot(workspace):
    """YAML 1.1 reads `8e-4` as a string; a float field still takes it (the README writes `optim.lr=1e-4`)."""
    cfg = ae_config(workspace, "sci", 1, ["optim.lr=8e-4", "optim.lr_min=1E-6"])
    assert cfg.optim.lr == 8e-4 and cfg.optim.lr_min == 1e-6


def test_autoencoder_resume_continues_the_same_trajectory(workspace):
    straight = AutoencoderTrainer(cfg := ae_config(workspace, "ae_straight", 4), cfg.run)
    straight.fit()
    first = AutoencoderTrainer(cfg := ae_config(workspace, "ae_resumed", 2), cfg.run)
    first.fit()
    resumed = AutoencoderTrainer(cfg := ae_config(workspace, "ae_resumed", 4), cfg.run)
    resumed.fit()
    assert resumed.step == 4
    a = load_file(str(workspace / "ae_straight/checkpoints/step_00000004/autoencoder.safetensors"))
    b = load_file(str(workspace / "ae_resumed/checkpoints/step_00000004/autoencoder.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = read_log(workspace / "ae_resumed")
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert (workspace / "ae_resumed/tb").is_dir()
    # Run again with a shorter horizon: nothing to train, and the run keeps the config it ran with.
    AutoencoderTrainer(cfg := ae_config(workspace, "ae_resumed", 2), cfg.run).fit()
    assert json.loads((workspace / "ae_resumed/config.json").read_text())["run"]["steps"] == 4


def test_autoencoder_validation_writes_metrics_grid_and_model(workspace):
    trainer = AutoencoderTrainer(cfg := ae_config(workspace, "ae_val", 1, ["run.val_every=1"]), cfg.run)
    metrics = trainer.fit()
    assert {"ae_psnr_y", "bicubic_psnr_y", "ae_lpips_alex", "psnr_gain_db"} <= set(metrics)
    assert (workspace / "ae_val/samples/step_00000001.png").is_file()
    assert json.loads((workspace / "ae_val/model/config.json").read_text())["components"]["autoencoder"]


def test_finished_model_directory_without_checkpoints_is_not_retrained(workspace):
    """A clone carries a finished stage as its model directory only: running the stage again keeps it."""
    trainer = AutoencoderTrainer(cfg := ae_config(workspace, "ae_done", 1, ["run.val_every=1"]), cfg.run)
    trainer.fit()
    shutil.rmtree(workspace / "ae_done/checkpoints")
    before = (workspace / "ae_done/model/autoencoder.safetensors").read_bytes()
    again = AutoencoderTrainer(cfg := ae_config(workspace, "ae_done", 1, ["run.val_every=1"]), cfg.run)
    assert again.fit() == {}
    assert again.step == 0 and not (workspace / "ae_done/checkpoints").exists()
    assert (workspace / "ae_done/model/autoencoder.safetensors").read_bytes() == before


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(workspace):
    out = workspace / "ae_sigint"
    args = [sys.executable, "-m", "rsd.cli", "train", "autoencoder", "--config",
            str(REPO / "configs/tiny-x4/autoencoder.yaml"), *common_overrides(workspace, "ae_sigint"),
            f"model={json.dumps(AE_MODEL)}", "data.crop_sizes=[32]", "run.steps=100000",
            "run.ckpt_every=100000", "run.val_every=100000"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "log.jsonl").is_file():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "training did not start"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "checkpoint saved" in stderr
    assert (out / "checkpoints/latest.txt").is_file()


def test_ddp_two_cpu_processes_keep_replicas_identical(workspace):
    script = REPO / "tests" / "ddp_check.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         str(script), str(workspace)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((workspace / "ddp" / "replicas.json").read_text())
    assert report["world_size"] == 2
    assert report["max_abs_diff"] == 0.0
    assert report["changed_from_init"]


@pytest.fixture(scope="module")
def autoencoder_dir(workspace):
    trainer = AutoencoderTrainer(cfg := ae_config(workspace, "ae_for_teacher", 1), cfg.run)
    trainer.fit()
    trainer.export()
    return workspace / "ae_for_teacher" / "model"


def test_slim_autoencoder_keeps_the_reference_latent_space(workspace, autoencoder_dir):
    """`reference`: start from a trained autoencoder without its mid attention, codebook frozen, pulled to
    the reference's latents; the model directory it writes loads without the attention weights."""
    slim_model = {**AE_MODEL, "ddconfig": {**AE_MODEL["ddconfig"], "mid_attention": False}}
    extra = [
        f"reference={autoencoder_dir}",
        f"model={json.dumps(slim_model)}",
        "loss.latent=10",
        "loss.codebook_init_from_data=false",
        "loss.dead_code_restart_every=0",
        "run.val_every=2",
    ]
    trainer = AutoencoderTrainer(cfg := ae_config(workspace, "ae_slim", 2, extra), cfg.run)
    metrics = trainer.fit()
    assert 0 < metrics["codes_kept"] <= 1
    log = read_log(workspace / "ae_slim")
    assert all(r["latent"] >= 0 and 0 <= r["codes_kept"] <= 1 for r in log if "loss" in r)
    reference = load_file(str(autoencoder_dir / "autoencoder.safetensors"))
    slim = load_file(str(workspace / "ae_slim/model/autoencoder.safetensors"))
    assert set(reference) - set(slim) == {k for k in reference if ".mid.attn_1." in k}
    key = "quantize.embedding.weight"
    assert torch.equal(slim[key], reference[key])  # frozen
    conv = "encoder.conv_in.weight"  # trained, from the reference's start
    assert not torch.equal(slim[conv], reference[conv]) and (slim[conv] - reference[conv]).abs().max() < 0.05
    with pytest.raises(ValueError, match="keeps the reference's codebook"):
        AutoencoderTrainer(cfg := ae_config(workspace, "ae_slim_bad", 1, extra[:3]), cfg.run).build()


def teacher_config(tmp: Path, out: str, autoencoder_dir: Path, extra=()) -> TeacherTrainConfig:
    overrides = [
        *common_overrides(tmp, out),
        f"autoencoder={autoencoder_dir}",
        f"model={json.dumps(UNET_MODEL)}",
        "schedule=v3",
        "data.crop_sizes=[32]",
        *extra,
    ]
    return load_config(TeacherTrainConfig, None, overrides)


@pytest.fixture(scope="module")
def teacher_dir(workspace, autoencoder_dir):
    extra = ["run.steps=2", "run.val_every=2", "run.ckpt_every=2", "loss.lpips=0.5"]
    cfg = teacher_config(workspace, "teacher", autoencoder_dir, extra)
    metrics = TeacherTrainer(cfg, cfg.run).fit()
    assert {"teacher_psnr_y", "bicubic_psnr_y", "psnr_gain_db"} <= set(metrics)
    return workspace / "teacher" / "model"


def test_teacher_trains_validates_and_exports(teacher_dir):
    config = json.loads((teacher_dir / "config.json").read_text())
    assert config["meta"]["stage"] == "teacher"
    assert config["diffusion"]["steps"] == 4


def test_teacher_fine_tunes_on_its_own_rollouts(workspace, teacher_dir):
    extra = [
        f"init_unet={teacher_dir}",
        "run.steps=3",
        "run.log_every=1",
        "run.val_every=1000",
        "loss.rollout_steps=2",
        "loss.rollout_prob=1.0",
    ]
    cfg = teacher_config(workspace, "teacher_rollout", teacher_dir, extra)
    TeacherTrainer(cfg, cfg.run).fit()
    steps = [entry["rollout_steps"] for entry in read_log(workspace / "teacher_rollout") if "mse" in entry]
    assert len(steps) == 3 and set(steps) <= {1.0, 2.0}
    assert (workspace / "teacher_rollout" / "model" / "config.json").exists()


def test_distill_trains_and_exports_a_student(workspace, teacher_dir):
    overrides = [
        *common_overrides(workspace, "distill"),
        f"teacher={teacher_dir}",
        "fake_updates=1",
        "data.crop_sizes=[32]",
        "run.steps=2",
        "run.val_every=2",
        "run.ckpt_every=1",
    ]
    cfg = load_config(DistillTrainConfig, None, overrides)
    trainer = DistillTrainer(cfg, cfg.run)
    before = {k: v.clone() for k, v in trainer.modules["student"].state_dict().items()}
    metrics = trainer.fit()
    assert {"student_psnr_y", "student_lpips_alex"} <= set(metrics)
    after = trainer.modules["student"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    log = read_log(workspace / "distill")
    assert {"theta", "lpips", "gan_g", "fake_mse", "gan_d"} <= set(log[0])
    config = json.loads((workspace / "distill/model/config.json").read_text())
    assert config["components"]["unet"]["kwargs"]["noise_channels"] == 1
    assert config["meta"]["student_timesteps"] == [0, 1, 2, 3]


def test_distill_mse_terms_enter_the_student_loss(workspace, teacher_dir):
    overrides = [
        *common_overrides(workspace, "distill_mse"),
        f"teacher={teacher_dir}",
        "fake_updates=0",
        "loss.lpips=0",
        "loss.gan=0",
        "loss.mse=5",
        "loss.pixel_mse=3",
        "data.crop_sizes=[32]",
        "run.steps=1",
        "run.val_every=1000",
    ]
    cfg = load_config(DistillTrainConfig, None, overrides)
    DistillTrainer(cfg, cfg.run).fit()
    log = read_log(workspace / "distill_mse")
    assert log[0]["mse"] > 0 and log[0]["pixel_mse"] > 0
    expected = log[0]["theta"] + 5 * log[0]["mse"] + 3 * log[0]["pixel_mse"]
    assert log[0]["student_loss"] == pytest.approx(expected, rel=1e-5)


def test_distill_fidelity_modes_reweight_the_terms_of_their_samples(workspace, teacher_dir):
    """Every sample clean and clean a fidelity mode: the MSE terms x4, the distribution terms off."""
    overrides = [
        *common_overrides(workspace, "distill_fidelity"),
        f"teacher={teacher_dir}",
        "fake_updates=0",
        "lr_mode=clean",
        "loss.lpips=1",
        "loss.gan=0.01",
        "loss.mse=5",
        "loss.pixel_mse=3",
        "loss.fidelity_modes=[clean]",
        "loss.fidelity_mse_scale=4",
        "loss.fidelity_perceptual_scale=0",
        "data.crop_sizes=[32]",
        "run.steps=1",
        "run.val_every=1000",
    ]
    cfg = load_config(DistillTrainConfig, None, overrides)
    DistillTrainer(cfg, cfg.run).fit()
    first = read_log(workspace / "distill_fidelity")[0]
    assert first["lpips"] > 0 and first["gan_g"] > 0  # computed and logged, but not counted
    expected = 4 * (5 * first["mse"] + 3 * first["pixel_mse"])
    assert first["student_loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="fidelity_modes"):
        load_config(DistillTrainConfig, None, ["loss.fidelity_modes=[blurry]"])


def test_rsd_eval_scores_every_mode_of_a_photo_folder(workspace, tmp_path):
    from typer.testing import CliRunner

    from rsd.cli import app
    from training.data.valset import load_val_set

    out = tmp_path / "eval.json"
    args = ["eval", str(workspace / "photos"), "--mode", "clean,mild", "--mode", "realesrgan"]
    result = CliRunner().invoke(app, [*args, "--crop-size", "32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    by_mode = json.loads(out.read_text())["modes"]
    assert list(by_mode) == ["clean", "mild", "realesrgan"]
    bicubic = {m: [s["psnr_y"] for s in rows[0]["per_image"]] for m, rows in by_mode.items()}
    assert len(set(map(tuple, bicubic.values()))) == 3  # each mode made its own LR
    # The realesrgan pairs made from the folder are the fixed set's (same photos, seed and crop).
    fixed = [
        r["psnr_y"]
        for r in json.loads(_eval_json(workspace / "val", tmp_path))["modes"]["realesrgan"][0]["per_image"]
    ]
    assert bicubic["realesrgan"] == pytest.approx(fixed)
    summary = result.output.splitlines()[-1]
    assert summary.startswith("bicubic") and summary.count("+0.00 [+0.00,+0.00]") == 3
    assert len(load_val_set(workspace / "val")) == len(bicubic["clean"])

    bad = CliRunner().invoke(app, ["eval", str(workspace / "val"), "--mode", "clean"])
    assert bad.exit_code == 2 and "fixed 'realesrgan'" in bad.output
    bad = CliRunner().invoke(app, ["eval", str(workspace / "photos"), "--mode", "blurry"])
    assert bad.exit_code == 2 and "unknown mode" in bad.output


def _eval_json(source: Path, tmp_path: Path) -> str:
    from typer.testing import CliRunner

    from rsd.cli import app

    out = tmp_path / "fixed.json"
    result = CliRunner().invoke(app, ["eval", str(source), "--json", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_rsd_eval_scores_bicubic_and_the_teacher_per_photo(workspace, teacher_dir):
    from typer.testing import CliRunner

    from rsd.cli import app
    from training.data.valset import load_val_set
    from training.metrics import psnr_y
    from training.validation import bicubic_up

    out = workspace / "eval.json"
    args = ["eval", str(workspace / "val"), "--teacher", str(teacher_dir), "--json", str(out), "--per-image"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert list(record["modes"]) == ["realesrgan"]  # the fixed set's own mode
    results = record["modes"]["realesrgan"]
    assert [(r["model"], r["nfe"]) for r in results] == [
        ("bicubic", 0),
        ("teacher (4 steps)", 4),
        ("teacher (one step)", 1),
    ]
    pairs = load_val_set(workspace / "val")
    direct = [psnr_y(bicubic_up(p.lr).clamp(0, 1), p.hr) for p in pairs]
    assert [s["name"] for s in results[0]["per_image"]] == [p.name for p in pairs]
    assert [s["psnr_y"] for s in results[0]["per_image"]] == pytest.approx(direct)
    for r in results:
        assert r["psnr_y"] == pytest.approx(sum(s["psnr_y"] for s in r["per_image"]) / len(pairs))
        assert r["lpips_alex"] >= 0 and r["dists"] >= 0 and r["seconds_per_image"] > 0
        gains = [s["psnr_y"] - d for s, d in zip(r["per_image"], direct, strict=True)]
        assert [s["psnr_y_gain"] for s in r["per_image"]] == pytest.approx(gains)
        lo, hi = r["psnr_y_gain_ci95"]
        assert min(gains) <= lo <= r["psnr_y_gain"] <= hi <= max(gains)
    assert results[0]["psnr_y_gain_ci95"] == [0.0, 0.0] and results[0]["lpips_ratio"] == 1.0
    first = pairs[0].name
    one_step = results[2]["per_image"][0]["psnr_y"]
    assert f"{one_step:.2f} ({one_step - direct[0]:+.2f})" in next(
        line for line in result.output.splitlines() if line.startswith(first[:36])
    )


def test_sampler_trajectory_runs_from_the_one_step_to_the_T_step_result(workspace, teacher_dir):
    from tests.script_support import load_script
    from training.data.valset import load_val_set
    from training.metrics import psnr_y
    from training.pipeline import SRPipeline

    script = load_script("scripts/sampler_trajectory.py")
    bundle = load_model_dir(teacher_dir)
    pipe = SRPipeline(bundle.unet, bundle.autoencoder, bundle.schedule).eval()
    pair = load_val_set(workspace / "val")[0]
    scores = script.trajectory(pipe, pair.lr, pair.hr, noise_scale=1.0, seed=5)
    assert len(scores) == bundle.schedule.num_timesteps

    def score(z0):
        return psnr_y((bundle.autoencoder.decode(z0).clamp(-1, 1)[0] + 1) / 2, pair.hr)

    lq = pair.lr[None] * 2 - 1
    z_y = pipe.encode_lr(lq)
    generator = torch.Generator().manual_seed(5)
    prior = torch.randn(z_y.shape, generator=generator)
    with torch.no_grad():
        assert scores[0] == pytest.approx(score(pipe.one_step_latent(lq, prior)), abs=1e-4)
        sampled = bundle.schedule.sample(pipe.denoise, z_y, lq, prior, generator=generator)
    assert scores[-1] == pytest.approx(score(sampled), abs=1e-4)


def test_decoder_stage_trains_only_the_decoder_and_exports_unquantized_decoding(workspace, teacher_dir):
    overrides = [
        *common_overrides(workspace, "decoder"),
        f"student={teacher_dir}",
        f"autoencoder={teacher_dir}",
        "data.crop_sizes=[32]",
        "run.steps=2",
        "run.val_every=2",
    ]
    cfg = load_config(DecoderTrainConfig, None, overrides)
    metrics = DecoderTrainer(cfg, cfg.run).fit()
    assert {"student_psnr_y", "student_lpips_alex", "psnr_gain_db"} <= set(metrics)
    source = load_model_dir(teacher_dir).autoencoder.state_dict()
    out = workspace / "decoder" / "model"
    tuned = load_model_dir(out).autoencoder
    changed = {k for k, v in tuned.state_dict().items() if not torch.equal(v, source[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert tuned.decode_quantized is False
    assert json.loads((out / "config.json").read_text())["meta"]["stage"] == "decoder"


def test_decoder_stage_prunes_the_decoder_it_fits(workspace, teacher_dir):
    """decoder_blocks fits a decoder with fewer full-resolution blocks, starting from the source's weights;
    the exported model records the pruning, so it loads (and exports) as it was trained."""
    overrides = [
        *common_overrides(workspace, "decoder_pruned"),
        f"student={teacher_dir}",
        f"autoencoder={teacher_dir}",
        "decoder_blocks=[1,2,2]",
        "data.crop_sizes=[32]",
        "run.steps=1",
    ]
    cfg = load_config(DecoderTrainConfig, None, overrides)
    DecoderTrainer(cfg, cfg.run).fit()
    source = load_model_dir(teacher_dir).autoencoder
    pruned = load_model_dir(workspace / "decoder_pruned" / "model").autoencoder
    assert len(source.decoder.up[0].block) == 2 and len(pruned.decoder.up[0].block) == 1
    assert set(pruned.state_dict()) < set(source.state_dict())
    with torch.no_grad():
        assert pruned(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    cfg = load_config(DecoderTrainConfig, None, [*overrides, "decoder_blocks=[1,2]"])
    with pytest.raises(ValueError, match="decoder_blocks"):
        DecoderTrainer(cfg, cfg.run).fit()


def test_prune_stage_fits_a_unet_with_fewer_swin_blocks_to_the_full_one(workspace, teacher_dir):
    """The pruned UNet starts from the source's weights, trains towards the source's own one-step latents,
    and exports with its swin_depths and the source's autoencoder, so it loads as it was trained."""
    overrides = [
        *common_overrides(workspace, "prune"),
        f"student={teacher_dir}",
        "swin_depths=[1,2]",
        "data.crop_sizes=[32]",
        "run.steps=2",
        "run.val_every=2",
    ]
    cfg = load_config(PruneTrainConfig, None, overrides)
    metrics = PruneTrainer(cfg, cfg.run).fit()
    assert {"student_psnr_y", "student_lpips_alex", "psnr_gain_db"} <= set(metrics)
    assert all(r["latent_mse"] > 0 for r in read_log(workspace / "prune") if "latent_mse" in r)
    source = load_model_dir(teacher_dir)
    pruned = load_model_dir(workspace / "prune" / "model")
    assert len(source.unet.input_blocks[1][1].blocks) == 2 and len(pruned.unet.input_blocks[1][1].blocks) == 1
    assert set(pruned.unet.state_dict()) < set(source.unet.state_dict())
    assert pruned.config["components"]["autoencoder"] == {
        **source.config["components"]["autoencoder"],
        "weights": "autoencoder.safetensors",
    }
    cfg = load_config(PruneTrainConfig, None, [*overrides, "swin_depths=[1]"])
    with pytest.raises(ValueError, match="swin_depths"):
        PruneTrainer(cfg, cfg.run).fit()


def test_light_stage_fits_the_encoder_and_exports_a_servable_light_autoencoder(
    workspace, teacher_dir, tmp_path
):
    from model_export.fused import build_fused
    from training.checkpoint import copy_model_dir
    from training.models import LightAutoencoder
    from training.train_light import LightTrainConfig, LightTrainer

    overrides = [
        *common_overrides(workspace, "light"),
        f"student={teacher_dir}",
        f"autoencoder={teacher_dir}",
        "data.crop_sizes=[32]",
        "run.steps=3",
        "run.val_every=3",
    ]
    cfg = load_config(LightTrainConfig, None, overrides)
    trainer = LightTrainer(cfg, cfg.run)
    metrics = trainer.fit()
    assert {"student_psnr_y", "student_lpips_alex", "psnr_gain_db"} <= set(metrics)
    log = [r for r in read_log(workspace / "light") if "latent_mse" in r]
    assert len(log) == 3 and all(r["latent_mse"] > 0 for r in log)
    out = workspace / "light" / "model"
    config = json.loads((out / "config.json").read_text())
    assert set(config["components"]) == {"autoencoder"} and config["meta"]["stage"] == "light"
    light = load_model_dir(out).autoencoder
    assert isinstance(light, LightAutoencoder)
    assert any(p.abs().sum() > 0 for p in light.decoder.conv_out.parameters())  # it trained off zero
    served = load_model_dir(copy_model_dir(teacher_dir, tmp_path / "served", autoencoder_from=out))
    lq = torch.rand(1, 3, 32, 32)
    sr = build_fused(served)(lq, torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
    assert sr.shape == (1, 3, 128, 128) and sr.min() >= 0 and sr.max() <= 1


def test_corrector_stage_learns_off_back_projection_and_exports_a_component_the_model_serves(
    workspace, teacher_dir, tmp_path
):
    from model_export.fused import build_fused
    from training.checkpoint import copy_model_dir
    from training.train_corrector import CorrectorTrainConfig, CorrectorTrainer

    overrides = [
        *common_overrides(workspace, "corrector"),
        f"model={teacher_dir}",
        "corrector.width=8",
        "corrector.blocks=1",
        "data.crop_sizes=[32]",
        "run.steps=3",
        "run.val_every=3",
    ]
    cfg = load_config(CorrectorTrainConfig, REPO / "configs/tiny-x4/corrector.yaml", overrides)
    metrics = CorrectorTrainer(cfg, cfg.run).fit()
    assert {"student_psnr_y", "psnr_gain_db"} <= set(metrics)
    out = workspace / "corrector" / "model"
    config = json.loads((out / "config.json").read_text())
    assert set(config["components"]) == {"corrector"} and config["meta"]["stage"] == "corrector"
    corrector = load_model_dir(out).corrector
    assert corrector.net[-1].weight.abs().sum() > 0  # it trained off the plain back-projection
    served = load_model_dir(copy_model_dir(teacher_dir, tmp_path / "served", corrector_from=out))
    lq = torch.rand(1, 3, 32, 32)
    fused = build_fused(served)
    with torch.no_grad():
        sr = fused(lq, torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))
        raw = fused.decode(fused.latent(lq, torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)))
    torch.testing.assert_close(sr, corrector(raw, lq))
    with pytest.raises(ValueError, match="has a corrector already"):
        served_cfg = load_config(CorrectorTrainConfig, None, [*overrides, f"model={tmp_path / 'served'}"])
        CorrectorTrainer(served_cfg, served_cfg.run)
