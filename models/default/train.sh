#!/usr/bin/env bash
# Reproduce models/default/model.pt with the project's own commands (about 30 min on 2 cores):
# a 400-work demo corpus (seed 1), its features, 25 epochs of training, an fp16 export
# and the held-out test metrics quoted in models/default/README.md. The shipped file is
# replaced only at the end, once every step has succeeded.
#   bash models/default/train.sh [WORK_DIR]       (default WORK_DIR: runs/default-model)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
work=${1:-runs/default-model}
ch=.venv/bin/coverhunter
$ch make-demo-corpus "$work/data" --works 400 --versions 4 --seed 1
printf 'aug_speed_mode: [1.0]\nsplit: {train: 0.8, val: 0.1, test: 0.1, seed: 0}\n' > "$work/data/hparams.yaml"
$ch extract "$work/data"
mkdir -p "$work/exp/config"
cp models/default/hparams.yaml "$work/exp/config/hparams.yaml"
$ch train "$work/exp"
.venv/bin/python -c "from coverhunter.checkpoint import export_model; export_model('$work/exp', '$work/model.pt')"
$ch evaluate "$work/model.pt" "$work/data/test.txt" --bootstrap 1000 --output "$work/test_metrics.json"
cp "$work/model.pt" models/default/model.pt.new && mv models/default/model.pt.new models/default/model.pt
