"""Mean ± standard deviation of eval.json over runs (seeds), as Markdown tables.

    python -m experiments.summarize runs/seeds/seed_*            # test split
    python -m experiments.summarize --split=validation runs/a runs/b
    python -m experiments.summarize --rows runs/ablation_*        # one row per run
    python -m experiments.summarize --split=validation --tag=spread1 runs/a   # eval_validation_spread1.json
    python -m experiments.summarize --render runs/render_fidelity_seed_*     # render_fidelity.json

Without --rows, the runs are seeds of one setting: one table of the model and
its baselines (rows) by metric (columns), each cell mean ± std over the runs,
and with --out=PATH also the summary as JSON at PATH.
With --render, the folders are outputs of `experiments.render_fidelity` (one
per trained run, e.g. per seed): each case (photo, class, size, rendering)
mean ± std over them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from cmm_jax import files, run_dir

# Columns shown, in order; a row without the key shows "—".
COLUMNS = (
    "conditional_error", "face_sensitivity", "class_accuracy", "style_recall", "mode_coverage",
    "apd_generated", "apd_ratio", "landmark_fd", "implausible_rate",
)
MODEL_ONLY = (
    "vae_nme", "judge_test_accuracy", "bayes_class_ceiling", "analytic_class_accuracy",
    "classifier_test_accuracy", "identity_nme_generated", "identity_nme_real", "start_nme",
)
ROWS = ("model", "model_k1", "face_blind", "face_blind_draws", "nearest_neighbour", "oracle_face",
        "oracle_face_draws", "oracle", "oracle_draws", "real")


def load(workdir: str, split: str, tag: str = "") -> dict:
    with open(run_dir.eval_path(workdir, split, tag)) as f:
        return json.load(f)


def columns_of(all_results: list[dict]) -> tuple[str, ...]:
    """COLUMNS, then the per-class FD (landmark_fd_<class>) that the runs have."""
    per_class = sorted({k for r in all_results for k in r if k.startswith("landmark_fd_")})
    return COLUMNS + tuple(per_class)


def rows_of(results: dict) -> dict[str, dict]:
    """{row name: figures}: the model (top level) and each baseline."""
    model = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    model.update({k: results[k] for k in results if k.startswith("landmark_fd_")})
    return {"model": model, **results.get("baselines", {})}


def spread(values) -> tuple[float, float]:
    """(mean, std with ddof 1); the std of equal values is 0, not the mean's rounding error (5e-19)."""
    values = np.asarray(values, float)
    if len(values) < 2 or np.ptp(values) == 0:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1))


def cell(values) -> str:
    if not values:
        return "—"
    mean, std = spread(values)
    return f"{mean:.4g} ± {std:.2g}" if len(values) > 1 else f"{mean:.4g}"


def summarize(all_results: list[dict]) -> dict:
    """-> {row: {metric: [mean, std, n]}} over runs."""
    summary: dict = {}
    for row in ROWS:
        keys = set()
        for results in all_results:
            keys |= set(rows_of(results).get(row, {}))
        for key in sorted(keys):
            values = [rows_of(r)[row][key] for r in all_results if key in rows_of(r).get(row, {})]
            summary.setdefault(row, {})[key] = [*spread(values), len(values)]
    return summary


def seeds_table(all_results: list[dict], columns=COLUMNS) -> str:
    lines = ["| row | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in ROWS:
        figures = [rows_of(r)[row] for r in all_results if row in rows_of(r)]
        if figures:
            lines.append(f"| {row} | " + " | ".join(cell([f[c] for f in figures if c in f]) for c in columns) + " |")
    lines += ["", "| model | " + " | ".join(MODEL_ONLY) + " |", "|---" * (len(MODEL_ONLY) + 1) + "|",
              "| | " + " | ".join(cell([r[k] for r in all_results if k in r]) for k in MODEL_ONLY) + " |"]
    return "\n".join(lines)


# The columns of --render: the fidelities and the apex width ratio that dlib
# reads in the frames, what the landmarks claim, and the identity checks.
RENDER_COLUMNS = (
    "render_fidelity_widening", "render_fidelity_opening", "apex_mouth_width_ratio",
    "apex_mouth_width_ratio_claimed", "apex_mouth_opening_claimed", "detection_rate", "identity_distance",
    "landmark_jump_p99",
)
# Columns about the mouth's motion, blank for a case of class "-" (the photo moved
# by a camera: no change of expression to measure).
MOUTH_COLUMNS = RENDER_COLUMNS[:5]


def load_render(folder: str) -> dict:
    with open(os.path.join(folder, "render_fidelity.json")) as f:
        return json.load(f)


def render_table(runs: list[dict]) -> str:
    """Every case of the first run's render_fidelity.json, mean ± std of
    RENDER_COLUMNS over the runs that have it (n: how many)."""
    def key(case):
        return case["photo"], case["class"], case["size"], case["renderer"]

    indexed = [{key(case): case for case in run["cases"]} for run in runs]
    lines = ["| photo | class | size | rendering | n | " + " | ".join(RENDER_COLUMNS) + " |",
             "|---" * (len(RENDER_COLUMNS) + 5) + "|"]
    for case_key in indexed[0]:
        cases = [index[case_key] for index in indexed if case_key in index]
        blank = MOUTH_COLUMNS if case_key[1] == "-" else ()
        cells = ("—" if c in blank else cell([case[c] for case in cases if case.get(c) is not None])
                 for c in RENDER_COLUMNS)
        lines.append("| " + " | ".join(map(str, case_key)) + f" | {len(cases)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(names: list[str], all_results: list[dict], columns=COLUMNS) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, results in zip(names, all_results):
        model = rows_of(results)["model"]
        lines.append(f"| {name} | " + " | ".join(cell([model[c]] if c in model else []) for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tag", default="", help="eval_<split>_<tag>.json (config.eval.tag)")
    parser.add_argument("--rows", action="store_true", help="one row per run instead of mean ± std")
    parser.add_argument("--out", help="write the summary as JSON here")
    parser.add_argument("--render", action="store_true",
                        help="the folders are outputs of experiments.render_fidelity: mean ± std of each case")
    args = parser.parse_args(argv)
    if args.render and args.out:
        print("error: --out writes the landmark runs' summary; with --render the table is printed only",
              file=sys.stderr)
        return 2
    if args.render:
        try:
            runs = [load_render(folder) for folder in args.workdirs]
            table = render_table(runs)
        except (OSError, json.JSONDecodeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (KeyError, TypeError) as e:  # not the JSON that experiments.render_fidelity writes
            print(f"error: not an output of experiments.render_fidelity (no {e})", file=sys.stderr)
            return 2
        print(f"{len(runs)} runs of experiments.render_fidelity, mean ± std (ddof 1)\n")
        print(table)
        return 0
    try:
        all_results = [load(w, args.split, args.tag) for w in args.workdirs]
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rows:
        print(runs_table([os.path.basename(os.path.normpath(w)) for w in args.workdirs], all_results,
                         columns_of(all_results)))
    else:
        print(f"{len(all_results)} runs, {args.split} split, mean ± std (ddof 1)\n")
        print(seeds_table(all_results, columns_of(all_results)))
    if args.out:
        files.write_json(args.out, {"runs": args.workdirs, "split": args.split, "tag": args.tag,
                                    "summary": summarize(all_results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
