"""What JAX's persistent compilation cache saves on the training steps.

  python -m benchmarks.compile_cache [--stages=vae,recurrent] [--steps=2] [--json=PATH]

Runs `python -m benchmarks.train_throughput` (those stages, no generation
timing) twice in fresh processes sharing one new, empty cache directory
(`JAX_COMPILATION_CACHE_DIR`, with `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0`
and `JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0` so every program is kept):
the first run compiles and writes the cache (cold), the second reads it
(warm). Reports per stage the first step's seconds (tracing + lowering +
compiling or loading + one step) cold and warm and the saving, each run's
wall time (process start to exit: imports, JAX start-up, every step), and the
cache entries and bytes the cold run wrote and the warm one added, so a cache
that writes nothing on this JAX version and platform shows as such. A cache
hit still traces and lowers: only XLA's compilation is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from cmm_jax import files

_STAGES = flags.DEFINE_list("stages", ["vae", "recurrent"], "Stages whose steps are compiled.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps per stage after the first (kept small: compile is what counts).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON.")


def _cache_contents(folder):
    """-> (entries, bytes) under the cache folder."""
    sizes = [os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names]
    return len(sizes), sum(sizes)


def _run_child(cache_dir, stages, steps):
    """One train_throughput process on this cache; -> (its result, wall seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "result.json")
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "benchmarks.train_throughput", f"--stages={','.join(stages)}",
             f"--steps={steps}", "--generation=false", f"--json={path}"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        with open(path) as f:
            return json.load(f)["runs"][0], wall


def measure(stages, steps):
    with tempfile.TemporaryDirectory() as cache_dir:
        cold, cold_wall = _run_child(cache_dir, stages, steps)
        cold_entries, cold_bytes = _cache_contents(cache_dir)
        warm, warm_wall = _run_child(cache_dir, stages, steps)
        warm_entries, warm_bytes = _cache_contents(cache_dir)
    rows = []
    for cold_row, warm_row in zip(cold["stages"], warm["stages"]):
        rows.append({
            "stage": cold_row["stage"],
            "cold_compile_s": cold_row["compile_s"],
            "warm_compile_s": warm_row["compile_s"],
            "saving_s": cold_row["compile_s"] - warm_row["compile_s"],
        })
    return {
        "stages": rows,
        "device": f"{cold['devices']} x {cold['device_kind']}",
        "cold_wall_s": cold_wall,
        "warm_wall_s": warm_wall,
        "entries_written": cold_entries,
        "bytes_written": cold_bytes,
        "entries_added_by_warm_run": warm_entries - cold_entries,
        "bytes_after_warm_run": warm_bytes,
    }


def main(argv):
    del argv
    result = measure(_STAGES.value, _STEPS.value)
    print(f"persistent compilation cache, {result['device']}: the cold run wrote {result['entries_written']} "
          f"entries ({result['bytes_written'] / 2**20:.1f} MiB), the warm run added "
          f"{result['entries_added_by_warm_run']}")
    print(f"  {'stage':>10} {'cold s':>8} {'warm s':>8} {'saved':>14}")
    for row in result["stages"]:
        print(f"  {row['stage']:>10} {row['cold_compile_s']:>8.2f} {row['warm_compile_s']:>8.2f} "
              f"{row['saving_s']:>6.2f} s ({100 * row['saving_s'] / row['cold_compile_s']:.0f}%)")
    print(f"  whole process: cold {result['cold_wall_s']:.1f} s, warm {result['warm_wall_s']:.1f} s")
    if not result["entries_written"]:
        print("  the cache wrote no entries on this JAX version and platform: nothing to save")
    if _JSON.value:
        files.write_json(_JSON.value, result, indent=1)


if __name__ == "__main__":
    app.run(main)
