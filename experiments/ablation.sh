#!/usr/bin/env bash
# The multi-mode ablation of BUILD.md: retrains only the multi-mode stage,
# reusing the VAE, classifier and recurrent net of a finished default run.
#   bash experiments/ablation.sh runs/smile    (after README command 1)
# Writes runs/ablation_<name>/eval.json and prints one table.
set -euo pipefail
base=${1:-runs/smile}
python=${PYTHON:-.venv/bin/python}
declare -A variants=(
  [k1]="--config.num_modes=1"
  [k5_no_diversity]="--config.multimode.assignment=mean --config.multimode.mode_id_weight=0"
  [k5_plain_wta]="--config.multimode.assignment=wta"
)
for name in k1 k5_no_diversity k5_plain_wta; do
  # shellcheck disable=SC2086
  "$python" -m cmm_jax.main --config=experiments/smile.py --workdir="runs/ablation_$name" \
    --config.stages=multimode --config.load_from="$base" ${variants[$name]}
done
"$python" - "$base" <<'PY'
import json, sys
rows = [("K=5 full (default)", sys.argv[1])] + [
    (name, f"runs/ablation_{name}") for name in ("k1", "k5_no_diversity", "k5_plain_wta")]
keys = ["class_accuracy", "mode_coverage", "distinct_styles_per_input", "apd_generated",
        "apd_ratio", "landmark_fd", "identity_nme_generated"]
print("| run | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for name, workdir in rows:
    metrics = json.load(open(f"{workdir}/eval.json"))
    print(f"| {name} | " + " | ".join(f"{metrics.get(k, float('nan')):.4g}" for k in keys) + " |")
PY
