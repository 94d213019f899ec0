#!/bin/sh
# `make default-model`: the embedded default model, end to end on the demo photos with fixed seeds.
# Every stage resumes from its last checkpoint, so the script can simply be run again after any stop.
set -eu
cd "$(dirname "$0")/.."

[ -d data/demo/train ] || python scripts/demo_data.py
[ -f data/demo/val-bicubic/manifest.json ] ||
  rsd data make-val --src data/demo/val --out data/demo/val-bicubic --mode bicubic --seed 0 --overwrite
[ -f data/demo/val-realesrgan/manifest.json ] ||
  rsd data make-val --src data/demo/val --out data/demo/val-realesrgan --mode realesrgan --seed 0 --overwrite

nice rsd train autoencoder --config configs/tiny-x4/autoencoder.yaml run.progress=false
nice rsd train teacher --config configs/tiny-x4/teacher.yaml run.progress=false
nice rsd train distill --config configs/tiny-x4/distill.yaml run.progress=false
nice rsd train autoencoder --config configs/tiny-x4/autoencoder-slim.yaml run.progress=false

# The embedded student: the distilled UNet, stored in fp16 (half the bytes, computed in fp32), on the
# autoencoder without mid attention (same latent space). Its graph takes 128x128 LR tiles: a 128x128 photo
# is one call, and without the attention a tile's cost is linear in its area.
mkdir -p models/default
rm -rf models/default/student
python -c "import torch; from training.checkpoint import copy_model_dir as c
c('runs/tiny-x4/distill/model', 'models/default/student', unet_dtype=torch.float16,
  autoencoder_from='runs/tiny-x4/autoencoder-slim/model')"
rsd export onnx models/default/student --out models/default/rsd-tiny-x4.onnx --tile 128 --name rsd-tiny-x4
rsd eval data/demo/val-realesrgan --teacher runs/tiny-x4/teacher/model --student runs/tiny-x4/distill/model \
  --student models/default/student --onnx models/default/rsd-tiny-x4.onnx --json models/default/eval.json
python scripts/model_card.py models/default
