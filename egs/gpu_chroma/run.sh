#!/usr/bin/env bash
# Train chroma-front-end variants side by side on one GPU from chroma packs, then score each
# best and last checkpoint on a separate selection set. Runs where the packs were carried:
#   bash egs/gpu_chroma/run.sh TRAIN_PACK SELECT_PACK OUT_DIR [VARIANT...]
# (variants: conf/<name>.overrides, default all). Environment: DEVICE (default cuda),
# BUDGET (seconds of training per variant, default: the config's), EXTRA (more overrides,
# SECTION.KEY=VALUE ...), WORK (default /tmp/gpu_chroma).
# Needs only numpy, torch, pyyaml and tqdm (the GPU image has them): src/ is put on PYTHONPATH.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
train_pack=$1 select_pack=$2 out=$3
shift 3
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=($(cd "$here/conf" && ls *.overrides | sed 's/\.overrides$//'))
work=${WORK:-/tmp/gpu_chroma}
device=${DEVICE:-cuda}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
t0=$(date +%s)
$py -m coverhunter unpack "$train_pack" "$work/data" || exit 1
$py -m coverhunter unpack "$select_pack" "$work/select" || exit 1
echo "unpacked in $(( $(date +%s) - t0 )) s"
for v in "${variants[@]}"; do
  mkdir -p "$work/$v/config"
  cp "$here/conf/base.yaml" "$work/$v/config/hparams.yaml"
  set_args=$(grep -v '^#' "$here/conf/$v.overrides" | tr '\n' ' ')
  [ -n "${BUDGET:-}" ] && set_args="$set_args optim.time_budget_s=$BUDGET"
  set_args="$set_args ${EXTRA:-}"
  # shellcheck disable=SC2086
  $py -m coverhunter train "$work/$v" $set_args --device "$device" > "$out/$v.train.log" 2>&1 &
done
wait
echo "trained in $(( $(date +%s) - t0 )) s"
for v in "${variants[@]}"; do
  (
    for which in best last; do
      ck="$work/$v/checkpoints/$which.pt"
      [ -f "$ck" ] || continue
      $py -c "from coverhunter.checkpoint import export_model; export_model('$ck', '$out/$v-$which.pt')" &&
      $py -m coverhunter evaluate "$out/$v-$which.pt" "$work/select/test.txt" --device "$device" \
        --output "$out/$v-$which.select.json" > "$out/$v-$which.eval.log" 2>&1
    done
    cp "$work/$v/history.json" "$out/$v.history.json" 2>/dev/null
    cp "$work/$v/config/resolved.yaml" "$out/$v.resolved.yaml" 2>/dev/null
  ) &
done
wait
for f in "$out"/*.select.json; do
  [ -f "$f" ] && $py -c "import json,sys; d=json.load(open('$f')); print('$(basename "$f" .select.json)', 'MAP %.4f MR1 %.1f' % (d['map'], d['mr1']))"
done
echo "done in $(( $(date +%s) - t0 )) s"
