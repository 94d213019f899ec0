#!/bin/sh
# `make default-model`: the embedded default model, end to end on the demo photos with fixed seeds.
# Every stage resumes from its last checkpoint, so the script can simply be run again after any stop.
set -eu
cd "$(dirname "$0")/.."

# data/demo (30 train + 8 validation photos), data/more (339 more training photos) and data/holdout (38
# held-out photos, refused unless disjoint from all of those: docs/holdout.md); each builds once.
python scripts/demo_data.py --more-out data/more --holdout-out data/holdout
[ -f data/demo/val-bicubic/manifest.json ] ||
  rsd data make-val --src data/demo/val --out data/demo/val-bicubic --mode clean --seed 0 --overwrite
[ -f data/demo/val-realesrgan/manifest.json ] ||
  rsd data make-val --src data/demo/val --out data/demo/val-realesrgan --mode realesrgan --seed 0 --overwrite

nice rsd train autoencoder --config configs/tiny-x4/autoencoder.yaml run.progress=false
# The teacher: a 2000-step cosine, resumed on a 3500-step one, then on the config's 5000-step one (only its
# fine-tune below is committed, so a clone that has that skips these; the 5000-step model is in the history:
# `git restore --source 969d4ed runs/tiny-x4/teacher-5000/model`).
[ -f runs/tiny-x4/teacher-mix/model/config.json ] || for steps in 2000 3500 5000; do
  nice rsd train teacher --config configs/tiny-x4/teacher.yaml run.steps=$steps run.progress=false
done
# ... then fine-tuned on the LR mixture (clean, mild, realesrgan) that the student and the decoder train on.
nice rsd train teacher --config configs/tiny-x4/teacher-mix.yaml run.progress=false
nice rsd train distill --config configs/tiny-x4/distill.yaml run.progress=false
nice rsd train autoencoder --config configs/tiny-x4/autoencoder-slim.yaml run.progress=false
nice rsd train decoder --config configs/tiny-x4/decoder.yaml run.progress=false
nice rsd train decoder --config configs/tiny-x4/decoder-pruned.yaml run.progress=false
nice rsd train light --config configs/tiny-x4/light.yaml run.progress=false
# The prune stage's model is not committed (the tree stays under 64 MiB): a clone runs it, 0.15 CPU hours.
nice rsd train prune --config configs/tiny-x4/prune.yaml run.progress=false

# Each stage's run directory, as its config names it.
config_key() { python -c "import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))
for key in sys.argv[2].split('.'): c = c[key]
print(c)" "$1" "$2"; }
TEACHER=$(config_key configs/tiny-x4/teacher-mix.yaml run.out_dir)/model
STUDENT=$(config_key configs/tiny-x4/distill.yaml run.out_dir)/model
PRUNED=$(config_key configs/tiny-x4/prune.yaml run.out_dir)/model
DECODER=$(config_key configs/tiny-x4/decoder-pruned.yaml run.out_dir)/model
LIGHT=$(config_key configs/tiny-x4/light.yaml run.out_dir)/model
BASE=$(config_key configs/tiny-x4/corrector.yaml model)
CORRECTOR=$(config_key configs/tiny-x4/corrector.yaml run.out_dir)/model

# The embedded student: the distilled UNet with one Swin block fewer in each level-0 Swin layer, fitted to
# the full one (the prune stage), stored in fp16 (half the bytes, computed in fp32), on the
# autoencoder without mid attention (same latent space) whose decoder the decoder stage fitted to the
# student's unquantised latents, then fitted again with one block fewer at full and at half resolution,
# behind the light stage's LR encoder (as good as the VQ encoder at a fraction of its cost; the light
# decoder is not, so it is left out: docs/distillation.md) ...
rm -rf "$BASE"
python -c "import sys, torch; from training.checkpoint import copy_model_dir as c
c(sys.argv[1], sys.argv[4], unet_dtype=torch.float16, autoencoder_from=sys.argv[2], lr_encoder_from=sys.argv[3])
" "$PRUNED" "$DECODER" "$LIGHT" "$BASE"
# ... with the LR corrector fitted behind that (docs/distillation.md, "The LR corrector"). Its graphs take
# LR tiles of 64 to 256 pixels, which the service picks per image (without the attention a tile's cost is
# linear in its area), run their convolutions in int8 (the corrector's and the bicubic resamplers' excepted),
# calibrated on the training photos, and read the student's safetensors for the rest (README, Performance).
nice rsd train corrector --config configs/tiny-x4/corrector.yaml run.progress=false
mkdir -p models/default
rm -rf models/default/student
python -c "import sys; from training.checkpoint import copy_model_dir as c
c(sys.argv[1], 'models/default/student', corrector_from=sys.argv[2])" "$BASE" "$CORRECTOR"
rsd export onnx models/default/student --out models/default/rsd-tiny-x4.json --tile 128 --extra-tile 64 \
  --extra-tile 96 --extra-tile 192 --extra-tile 256 --name rsd-tiny-x4 --precision int8 \
  --calibration data/demo/train
# The fp32 graph of 128 tiles: what the gpu image builds its TensorRT engine from (Dockerfile).
rsd export onnx models/default/student --out models/default/rsd-tiny-x4-fp32.json --tile 128 --extra-tile 128 \
  --name rsd-tiny-x4
# Scored in every LR mode on the 8 validation photos (their realesrgan pairs are data/demo/val-realesrgan's).
rsd eval data/demo/val --mode clean,mild,realesrgan --teacher "$TEACHER" --student "$STUDENT" \
  --student "$BASE" --student models/default/student --onnx models/default/rsd-tiny-x4.json \
  --json models/default/eval.json
python scripts/model_card.py models/default
