#!/usr/bin/env bash
# Equal-CPU-time comparison of issue 27's arms on a rendered cover corpus:
#   control        CQT input, focal + triplet, the 2.2 M-parameter default network
#   fine_chroma    fine chroma input (views c3|c1, key shifts), focal + triplet
#   passage_cqt    CQT input, passage InfoNCE on the corpus's exact alignment
#   passage        fine chroma input, passage InfoNCE
#   passage_small  fine chroma input, passage InfoNCE, a 0.32 M-parameter network
#   passage_queue  as passage, plus 1024 queued negatives from a momentum encoder
#
#   bash egs/fine_chroma/run.sh WORK [ARM...]
#        (default arms: control fine_chroma passage passage_small; any conf/*.yaml by name)
#
# Every stage resumes: run the same command again after a kill, a reboot or a full
# budget and it goes on where it stopped (make-corpus and extract skip finished
# recordings; train resumes from WORK/ARM/checkpoints/last.pt, written every epoch,
# i.e. every 0.5-3 minutes; a finished arm is skipped). Arms run one after the other, one
# thread each, so each gets the same CPU time: optim.time_budget_s seconds of training
# and validation (the cosine decay is fitted to it). Environment:
#   WORKS=600        training corpus works (make-corpus --versions 4-8, harmony kept 0.5)
#   TEST_WORKS=60    held-out test works (make-corpus --split test: bench_accuracy's works,
#                    half the versions keeping the harmony, as in the training corpus)
#   BUDGET=3600      CPU seconds per arm (optim.time_budget_s, optim.budget_clock cpu). Fixed for a started arm: the
#                    schedule is fitted to it and never grows again (a longer run needs
#                    a new WORK, or `coverhunter train --init-from` into a new EXP_DIR)
#   THREADS=1        torch threads per arm;  NICE=10;  PYTHON=.venv/bin/python
#   EXTRA="..."      more SECTION.KEY=VALUE overrides for every arm
#   DATA_ONLY=1      stop after the data stage (then two invocations with different arms
#                    can train side by side, one core each)
# Output: WORK/ARM/history.json (val_map and train_seconds per epoch), WORK/ARM/test.json
# (MAP on the test corpus of the best checkpoint) and WORK/summary.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: run.sh WORK [ARM...]}
shift
arms=("$@")
[ ${#arms[@]} -eq 0 ] && arms=(control fine_chroma passage passage_small)
for arm in "${arms[@]}"; do
  [ -f "$here/conf/$arm.yaml" ] || { echo "no such arm: $arm (see $here/conf)"; exit 1; }
done
py=${PYTHON:-$root/.venv/bin/python}
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
ch="nice -n ${NICE:-10} $py -m coverhunter"
mkdir -p "$work"

# 1) data: a training corpus (its alignment.jsonl comes with it) and a held-out test corpus
$ch make-corpus "$work/data" --works "${WORKS:-600}" --versions 4-8 --seed 1 --workers 1 || exit 1
$ch extract "$work/data" --workers 1 || exit 1
$ch make-corpus "$work/test" --split test --works "${TEST_WORKS:-60}" --versions 4-8 --seed 0 \
  --workers 1 || exit 1
$ch extract "$work/test" --workers 1 || exit 1
[ -n "${DATA_ONLY:-}" ] && exit 0

# 2) train every arm for the same time budget (resumes; a finished arm returns at once)
for arm in "${arms[@]}"; do
  mkdir -p "$work/$arm/config"
  [ -f "$work/$arm/config/hparams.yaml" ] || cp "$here/conf/$arm.yaml" "$work/$arm/config/hparams.yaml"
  set_args="optim.device=cpu ${BUDGET:+optim.time_budget_s=$BUDGET} ${EXTRA:-}"
  # shellcheck disable=SC2086
  $ch train "$work/$arm" $set_args >> "$work/$arm/train.log" 2>&1 || { echo "$arm: training failed, see $work/$arm/train.log"; exit 1; }
done

# 3) the best checkpoint of each arm on the held-out test corpus, every recording a query:
#    the model alone, and the two-stage search (top 50 re-ranked by chroma alignment)
for arm in "${arms[@]}"; do
  for rerank in 0 50; do
    out="$work/$arm/test$([ "$rerank" = 0 ] || echo "_rerank$rerank").json"
    [ -f "$out" ] && [ "$out" -nt "$work/$arm/checkpoints/best.pt" ] && continue
    $ch evaluate "$work/$arm" "$work/test/full.txt" --rerank "$rerank" --output "$out" \
      > "${out%.json}.log" 2>&1 || echo "$arm: evaluation failed, see ${out%.json}.log"
  done
done
# the summary of every arm trained in WORK (not only those named: a run of one arm must
# not drop the others' rows)
done_arms=()
for c in "$here"/conf/*.yaml; do
  a=$(basename "$c" .yaml)
  [ -f "$work/$a/history.json" ] && done_arms+=("$a")
done
$py "$here/summary.py" "$work" "${done_arms[@]}" | tee "$work/summary.md"
