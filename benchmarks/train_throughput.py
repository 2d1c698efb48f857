"""Training speed of every stage, and generation latency.

  python -m benchmarks.train_throughput [--config=experiments/smile.py] [--steps=50] \
      [--stages=vae,recurrent] [--devices=1,2] [--peak_tflops=...] [--json=PATH]

Random batches of the configured shapes (no dataset needed; the translator
gets random frames, as from a video dataset: batch = clips, each giving
translator.frames_per_clip image pairs). Per stage:
- compile: seconds of the first step, tracing + lowering + XLA compiling +
  running it, blocked on (`jax.block_until_ready`);
- steps/s and examples/s over --steps further steps (global batch);
- peak memory: on an accelerator the device's `peak_bytes_in_use`
  (`memory_stats()`); on CPU, which has none, the process's peak resident
  set size (`resource.getrusage`) after the stage, and how much it grew in it;
- FLOPs of one step from XLA's cost analysis of the compiled step (per
  device: the data-parallel program each device runs), and on an accelerator
  the model-FLOPs utilisation: FLOPs x steps/s / the device's peak FLOP/s
  (a table of known cards below, or --peak_tflops). On CPU: no MFU.
With --translator_bf16 (the default) the translator stage is timed a second
time computing in bfloat16 (config.translator.dtype; parameters float32),
its MFU against the card's bf16 peak.
Stages left out by --stages but required by one timed (e.g. the recurrent
stage needs the VAE) are freshly initialised, not trained: speed only.

--devices=1,2 runs the whole benchmark once per count, each in its own
subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=N` (CPU
devices; set before JAX starts), the same global batch split over the data
mesh (cmm_jax/sharding.py). Without it, this process's devices are used.
Numbers depend on the machine: they belong in benchmarks/RESULTS.md, never
in tests.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from cmm_jax import files, sharding, train
from cmm_jax.configuration import STAGE_ORDER
from cmm_jax.data.pipeline import DatasetInfo
from cmm_jax.inference import generate
from cmm_jax.stages import STAGES

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/smile.py", "Experiment config.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per stage.")
_FRAMES = flags.DEFINE_integer("num_frames", 32, "Frames per sequence.")
_STAGES = flags.DEFINE_list("stages", list(STAGE_ORDER), "Stages to time.")
_GENERATION = flags.DEFINE_boolean("generation", True, "Also time one face -> K landmark sequences.")
_DEVICES = flags.DEFINE_list("devices", [], "CPU device counts, one subprocess each (e.g. 1,2); "
                             "empty: this process's devices.")
_EXPECT = flags.DEFINE_integer("expect_devices", 0, "(set by --devices) fail unless there are this many.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s for MFU (default: the table).")
_BF16 = flags.DEFINE_boolean("translator_bf16", True, "Also time the translator computing in bfloat16.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON.")

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"

# Dense peak TFLOP/s per device (vendor figures; SXM boards for NVIDIA).
# fp32 is what these models compute in; None where the vendor gives none.
PEAK_TFLOPS = {  # device_kind substring: (bf16, fp32)
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "TPU v4": (275.0, None),
    "TPU v5 lite": (197.0, None),
    "TPU v5e": (197.0, None),
    "TPU v5p": (459.0, None),
    "TPU v6 lite": (918.0, None),
}


def peak_tflops(device, override=None, bf16=False):
    """-> (TFLOP/s or None, where it comes from) for one device, of its fp32
    units (or bf16's, with bf16=True)."""
    if override:
        return override, "--peak_tflops"
    if device.platform == "cpu":
        return None, "no accelerator"
    for kind, (bf16_peak, fp32_peak) in PEAK_TFLOPS.items():
        if kind.lower() in device.device_kind.lower():
            if bf16 or not fp32_peak:
                return bf16_peak, f"{kind} bf16 dense" + ("" if bf16 else " (no fp32 figure)")
            return fp32_peak, f"{kind} fp32 dense"
    return None, f"unknown peak for {device.device_kind!r}: pass --peak_tflops"


def step_flops(compiled) -> float | None:
    """FLOPs of one call from XLA's cost analysis (a dict, or a list of dicts in older JAX)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def device_peak_mib(device) -> float | None:
    stats = device.memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def _batch(batch_size, num_frames, rng, frame_size=0):
    batch = {
        "landmarks": rng.uniform(-0.6, 0.6, (batch_size, num_frames, 68, 2)).astype(np.float32),
        "label": rng.integers(0, 2, batch_size).astype(np.int32),
        "style": rng.integers(0, 5, batch_size).astype(np.int32),
    }
    if frame_size:  # a video dataset's clips (the translator's input)
        batch["frames"] = rng.integers(0, 256, (batch_size, num_frames, frame_size, frame_size, 3), np.uint8)
    return batch


def _fresh_model(name, config, info):
    graphdef, state, _ = train.init_state(name, config, info)
    return nnx.merge(graphdef, state.params)


def time_stage(name, config, info, models, mesh, rng, steps, label=None):
    """Compiles and times one stage's train step; -> its row (named `label`,
    default the stage's), and its model after the steps."""
    graphdef, state, tx = train.init_state(name, config, info)
    frozen = {k: models[k] if k in models else _fresh_model(k, config, info) for k in STAGES[name].requires}
    step = train.make_train_step(name, config, graphdef, frozen, tx, mesh)
    frozen_states = sharding.replicate({k: nnx.state(m) for k, m in frozen.items()}, mesh)
    state = sharding.replicate(state, mesh)
    frame_size = config.translator.image_size if name == "translator" else 0
    batch_size = config[name].batch_size
    batch = sharding.shard_batch(_batch(batch_size, _FRAMES.value, rng, frame_size), mesh)
    rss_before = peak_rss_mib()

    start = time.perf_counter()
    compiled = step.lower(state, frozen_states, batch).compile()
    state, metrics = compiled(state, frozen_states, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, frozen_states, batch)
    jax.block_until_ready(metrics)
    rate = steps / (time.perf_counter() - start)

    row = {
        "stage": label or name,
        "batch": batch_size,
        "examples": "clips" if name == "translator" else "sequences",
        "compile_s": compile_seconds,
        "steps_per_s": rate,
        "examples_per_s": rate * batch_size,
        "flops_per_step": step_flops(compiled),
        "device_peak_mib": device_peak_mib(jax.devices()[0]),
        "peak_rss_mib": peak_rss_mib(),
        "rss_growth_mib": peak_rss_mib() - rss_before,
    }
    return row, nnx.merge(graphdef, state.params)


def time_generation(config, info, models, rng, repeats=20):
    """Median seconds of one neutral face -> K landmark sequences, after warm-up,
    at the config's `multimode.temperature` (0 by default: the noise-free
    unroll that sampling and evaluation run)."""
    vae, recurrent, multimode = (models[k] if k in models else _fresh_model(k, config, info) for k in ("vae", "recurrent", "multimode"))
    temperature = float(config.multimode.get("temperature", 1.0))
    fn = nnx.jit(
        lambda v, r, g, x, y, key: generate(v, r, g, x, y, key, _FRAMES.value, config.multimode.per_mode_timing,
                                            temperature=temperature)
    )
    neutral = _batch(1, 1, rng)["landmarks"][:, 0]
    label = np.zeros(1, np.int32)
    jax.block_until_ready(fn(vae, recurrent, multimode.generator, neutral, label, jax.random.PRNGKey(0)))
    timings = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(vae, recurrent, multimode.generator, neutral, label, jax.random.PRNGKey(i)))
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def run(config, stages, steps, generation, peak_override=None, translator_bf16=True):
    """The whole benchmark in this process; -> a JSON-able dict."""
    info = DatasetInfo(("posed", "spontaneous"), tuple(f"s{i}" for i in range(5)), _FRAMES.value)
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    device = jax.devices()[0]
    peak, peak_source = peak_tflops(device, peak_override)
    peak_bf16, _ = peak_tflops(device, peak_override, bf16=True)
    rows, models = [], {}
    for name in (s for s in STAGE_ORDER if s in stages):
        row, models[name] = time_stage(name, config, info, models, mesh, rng, steps)
        rows.append(row)
    if "translator" in stages and translator_bf16 and config.translator.dtype != "bfloat16":
        half = config.copy_and_resolve_references()
        half.translator.dtype = "bfloat16"
        rows.append(time_stage("translator", half, info, models, mesh, rng, steps, label="translator (bf16)")[0])
    for row in rows:
        row_peak = peak_bf16 if row["stage"] == "translator (bf16)" else peak
        if row_peak and row["flops_per_step"]:
            row["mfu"] = row["flops_per_step"] * row["steps_per_s"] / (row_peak * 1e12)
    return {
        "devices": jax.device_count(),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "memory": "device peak_bytes_in_use" if rows and rows[0]["device_peak_mib"] is not None
        else "process peak RSS (CPU: no device memory statistics)",
        "peak_tflops": peak,
        "peak_tflops_bf16": peak_bf16,
        "peak_source": peak_source,
        "num_modes": config.num_modes,
        "steps": steps,
        "stages": rows,
        "generation_ms": 1e3 * time_generation(config, info, models, rng) if generation else None,
    }


def print_run(result):
    print(f"devices: {result['devices']} x {result['device_kind']}, K = {result['num_modes']}, "
          f"{result['steps']} timed steps; memory: {result['memory']}; MFU: "
          + (f"against {result['peak_tflops']} TFLOP/s ({result['peak_source']})" if result["peak_tflops"]
             else result["peak_source"]))
    print(f"{'stage':>17} {'batch':>6} {'compile s':>10} {'steps/s':>9} {'examples/s':>11} "
          f"{'peak MiB':>9} {'GFLOP/step':>11} {'MFU':>7}")
    for row in result["stages"]:
        memory = row["device_peak_mib"] if row["device_peak_mib"] is not None else row["peak_rss_mib"]
        flops = f"{row['flops_per_step'] / 1e9:.3f}" if row["flops_per_step"] else "-"
        mfu = f"{100 * row['mfu']:.2f}%" if "mfu" in row else "-"
        print(f"{row['stage']:>17} {row['batch']:>6} {row['compile_s']:>10.2f} {row['steps_per_s']:>9.1f} "
              f"{row['examples_per_s']:>11.0f} {memory:>9.0f} {flops:>11} {mfu:>7}")
    if result["generation_ms"] is not None:
        print(f"one face -> {result['num_modes']} landmark sequences of {_FRAMES.value} frames: "
              f"median {result['generation_ms']:.1f} ms after warm-up")


def run_subprocesses(counts):
    """One child per device count, CPU devices forced before JAX starts; -> their results."""
    passed = [a for a in sys.argv[1:] if not a.startswith(("--devices", "--json", "--expect_devices"))]
    results = []
    for count in counts:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "result.json")
            env = dict(os.environ)
            kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
            env["XLA_FLAGS"] = " ".join(kept + [f"{DEVICE_COUNT_FLAG}={count}"])
            subprocess.run(
                [sys.executable, "-m", "benchmarks.train_throughput", *passed,
                 f"--expect_devices={count}", f"--json={path}"],
                env=env, check=True,
            )
            with open(path) as f:
                results.append(json.load(f))
    return results


def main(argv):
    del argv
    if _DEVICES.value:
        runs = run_subprocesses([int(n) for n in _DEVICES.value])
        if len(runs) > 1:
            base = {row["stage"]: row["steps_per_s"] for row in runs[0]["stages"]}
            print(f"steps/s against {runs[0]['devices']} device(s): " + "; ".join(
                f"{r['devices']} devices: " + ", ".join(
                    f"{row['stage']} {row['steps_per_s'] / base[row['stage']]:.2f}x" for row in r["stages"])
                for r in runs[1:]))
    else:
        unknown = set(_STAGES.value) - set(STAGE_ORDER)
        if unknown:
            raise app.UsageError(f"unknown stages {sorted(unknown)}; stages are {','.join(STAGE_ORDER)}")
        if _EXPECT.value and jax.device_count() != _EXPECT.value:
            raise SystemExit(f"expected {_EXPECT.value} devices, found {jax.device_count()} "
                             "(--devices forces CPU devices; on an accelerator run without it)")
        runs = [run(_CONFIG.value, set(_STAGES.value), _STEPS.value, _GENERATION.value, _PEAK.value, _BF16.value)]
        print_run(runs[0])
    if _JSON.value:
        files.write_json(_JSON.value, runs[0] if _EXPECT.value else {"runs": runs}, indent=1)


if __name__ == "__main__":
    app.run(main)
