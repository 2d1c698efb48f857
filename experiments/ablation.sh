#!/usr/bin/env bash
# The multi-mode ablation of BUILD.md: retrains only the multi-mode stage,
# reusing the VAE, classifiers and recurrent net of a finished default run.
#   bash experiments/ablation.sh runs/smile [SPLIT=test] [more --config overrides for every run]
# Writes runs/ablation_<name>/eval.json and prints one row per run (the
# baselines are rows of every eval.json: python -m experiments.summarize runs/smile).
set -euo pipefail
base=${1:-runs/smile}
split=${2:-test}
shift $(( $# > 2 ? 2 : $# ))
python=${PYTHON:-.venv/bin/python}
declare -A variants=(
  [k1]="--config.num_modes=1"
  [class_term]="--config.multimode.class_weight=0.01"
  [mode_id]="--config.multimode.mode_id_weight=0.01"
  [posterior_timing]="--config.multimode.train_timing=posterior --config.multimode.temperature=1"
  [matched_timing]="--config.multimode.train_timing=matched --config.multimode.temperature=1"
  [no_diversity]="--config.multimode.assignment=mean"
)
names=(k1 class_term mode_id posterior_timing matched_timing no_diversity)
for name in "${names[@]}"; do
  # shellcheck disable=SC2086
  "$python" -m cmm_jax.main --config=experiments/smile.py --workdir="runs/ablation_$name" \
    --config.stages=multimode --config.load_from="$base" --config.eval.split="$split" ${variants[$name]} "$@"
done
"$python" -m experiments.summarize --rows --split="$split" "$base" "${names[@]/#/runs/ablation_}"
