#!/usr/bin/env bash
# The default experiment over several training seeds (same data), then
# mean ± std of every figure on the test split. The landmark metrics do not
# depend on the translator, so it is not trained here (README command 1
# trains it; with seed 0 its eval.json equals seed_0's).
#   bash experiments/seeds.sh [OUT=runs/seeds] [extra --config overrides...]
#   SEEDS="0 1 2 3 4" bash experiments/seeds.sh     (default SEEDS="0 1 2")
# A seed whose eval.json exists is not run again. Writes OUT/seed_<s>/,
# OUT/summary.json and prints the table (python -m experiments.summarize).
set -euo pipefail
out=${1:-runs/seeds}
shift $(( $# > 0 ? 1 : 0 ))
python=${PYTHON:-.venv/bin/python}
workdirs=()
for seed in ${SEEDS:-0 1 2}; do
  if [[ ! -f "$out/seed_$seed/eval.json" ]]; then
    "$python" -m cmm_jax.main --config=experiments/smile.py --workdir="$out/seed_$seed" \
      --config.seed="$seed" --config.stages=vae,classifier,judge,recurrent,multimode "$@"
  fi
  workdirs+=("$out/seed_$seed")
done
"$python" -m experiments.summarize --out="$out/summary.json" "${workdirs[@]}"
