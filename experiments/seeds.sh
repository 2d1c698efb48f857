#!/usr/bin/env bash
# The default experiment over several training seeds (same data), then
# mean ± std of every figure. The landmark metrics do not depend on the
# translator, so it is not trained here (README command 1 trains it).
#   bash experiments/seeds.sh [NUM_SEEDS=3] [OUT=runs/seeds] [extra --config overrides...]
# Writes OUT/seed_<s>/eval.json, OUT/summary.json and prints the table.
set -euo pipefail
num_seeds=${1:-3}
out=${2:-runs/seeds}
shift $(( $# > 2 ? 2 : $# ))
python=${PYTHON:-.venv/bin/python}
workdirs=()
for (( seed = 0; seed < num_seeds; seed++ )); do
  "$python" -m cmm_jax.main --config=experiments/smile.py --workdir="$out/seed_$seed" \
    --config.seed="$seed" --config.stages=vae,classifier,judge,recurrent,multimode "$@"
  workdirs+=("$out/seed_$seed")
done
"$python" -m experiments.summarize --out="$out/summary.json" "${workdirs[@]}"
