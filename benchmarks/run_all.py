"""Every benchmark in one command, written up as benchmarks/RESULTS.md.

  python -m benchmarks.run_all [--quick] [--workdir=runs/smile] [--out=benchmarks/RESULTS.md] \
      [--only=recurrent_scan,train_throughput,compile_cache,sample_latency,preprocess_throughput]

Runs each benchmark of this folder as its own process (`--json` to a
temporary file), then writes one Markdown file: a header naming the machine
(CPU, cores, memory, load, JAX / jaxlib / Flax versions, device, date, commit)
and the command, and one section per benchmark with its tables and ratios.
--workdir (a trained run) adds the whole photo -> videos sampling times.
--command1 first times README command 1 in a fresh clone of HEAD (venv,
pip install, every stage, evaluation) and uses that run as the workdir.
--quick: tiny step counts and sizes, to check the command works (seconds to
a few minutes); its numbers mean nothing, so never commit its RESULTS.md.
A benchmark that fails is reported in its section and makes the exit code 1.
The hand-written history of earlier measurements is benchmarks/HISTORY.md.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_QUICK = flags.DEFINE_boolean("quick", False, "Tiny settings: checks the command, measures nothing.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run for sample_latency's whole-sampling times.")
_OUT = flags.DEFINE_string("out", "benchmarks/RESULTS.md", "Where to write the results.")
_ONLY = flags.DEFINE_list("only", [], "Run only these benchmarks (default: all).")
_KEEP = flags.DEFINE_string("keep_run", None, "With --command1: copy its run folder here (e.g. for "
                            "`CMM_JAX_RUN=PATH pytest -m trained_run tests`); the clone is removed otherwise.")
_COMMAND1 = flags.DEFINE_boolean(
    "command1", False, "First time README command 1 in a fresh clone of this repository's HEAD (its own venv, "
    "pip's cache as it is, an empty compilation cache), and give its run to sample_latency (instead of --workdir).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `configuration.STAGE_ORDER` (tests/test_benchmarks.py checks); not imported, as this driver
# loads no JAX itself (the devices are its children's, asked of a child process).
STAGES = "vae,classifier,judge,recurrent,multimode,translator"

# name -> (full arguments, --quick arguments)
BENCHMARKS = {
    "recurrent_scan": (
        ["--repeats=30"],
        ["--repeats=2", "--num_frames=4", "--config.recurrent.batch_size=4", "--config.recurrent.hidden=8",
         "--config.vae.latent_dim=4", "--config.recurrent.noise_dim=2", "--torch=false"],
    ),
    "train_throughput": (["--steps=50", "--devices=1,2"], ["--steps=2", "--stages=classifier", "--devices=1,2"]),
    "compile_cache": ([f"--stages={STAGES}", "--steps=2"], ["--stages=classifier", "--steps=1"]),
    "sample_latency": (["--repeats=5"], ["--repeats=1", "--num_modes=1", "--num_frames=4"]),
    "preprocess_throughput": ([], ["--num_frames=10", "--repeats=1"]),
}


def _first(path, key):
    """The first `key: value` line's value in a /proc file, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.split(":")[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine():
    """What the numbers were measured on; the device comes from a JAX child process,
    so this one never holds an accelerator the benchmarks need."""
    probe = subprocess.run(
        [sys.executable, "-c", "import json, jax; d = jax.devices(); "
         "print(json.dumps([len(d), d[0].platform, d[0].device_kind]))"],
        capture_output=True, text=True, cwd=REPO,
    )
    count, device_platform, kind = json.loads(probe.stdout) if probe.returncode == 0 else (0, "?", "?")
    memory = _first("/proc/meminfo", "MemTotal")
    cpu = _first("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    family, model = _first("/proc/cpuinfo", "cpu family"), _first("/proc/cpuinfo", "model")
    if family and model:
        cpu += f" (family {family} model {model})"
    if "hypervisor" in (_first("/proc/cpuinfo", "flags") or "").split():
        cpu += ", virtual machine"
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=REPO)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": int(memory.split()[0]) / 2**20 if memory else None,
        "load": os.getloadavg(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "devices": f"{count} x {kind} ({device_platform})",
        "accelerator": device_platform not in ("cpu", "?"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (commit.stdout.strip() or "?") + (" (uncommitted changes)" if dirty.stdout.strip() else ""),
    }


def run_benchmark(name, args, folder):
    """-> (its JSON result or None, its printed output, error text or None)."""
    path = os.path.join(folder, f"{name}.json")
    command = [sys.executable, "-m", f"benchmarks.{name}", *args, f"--json={path}"]
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    print(result.stdout, end="", flush=True)
    if result.returncode != 0 or not os.path.exists(path):
        return None, result.stdout, f"exit code {result.returncode}: {result.stderr[-2000:]}"
    with open(path) as f:
        return json.load(f), result.stdout, None


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def recurrent_section(result, host):
    sizes = result["sizes"]
    rows = dict(result["rows"], **(result["torch"]["rows"] if result["torch"] else {}))
    scan = result["rows"]["scan (jit)"]
    loop = result["rows"]["Python loop of jitted steps"]
    eager = result["rows"]["Python loop, no jit (op by op)"]
    unrolled = result["rows"]["unrolled Python loop inside jit"]

    def ratio(row):
        if "ratio_quartiles" not in row:  # PyTorch: not interleaved with the scan
            return f"{row['step_ms'] / scan['step_ms']:.2f}x"
        return "{:.2f}x ({:.2f}-{:.2f})".format(row["ratio"], *row["ratio_quartiles"])

    text = [
        f"One training step of `ConditionalRecurrent` (forward over T frames, L2 to a random target, gradient, "
        f"adam): batch {sizes['batch']}, T = {sizes['frames']}, latent {sizes['latent']}, hidden "
        f"{sizes['hidden']}, noise {sizes['noise']}, {sizes['classes']} classes; {result['device']}. "
        f"Compile: the first call (tracing + compiling + one step). Then {result['repeats']} rounds, each timing "
        f"one step of every JAX way in turn; step: the median; vs scan: the median over rounds of the step's time "
        f"over the scan's in the same round (quartiles in brackets). The JAX ways gave the same loss and "
        f"gradients (largest difference {result['max_grad_difference']:.1e}), checked in the run.",
        "",
        _table(["way", "compile s", "step ms", "step vs scan"], [
            [name, f"{row['compile_s']:.2f}", f"{row['step_ms']:.2f}", ratio(row)] for name, row in rows.items()
        ]),
        "",
        f"**Ratios in this run:** a step of the Python loop of jitted steps (the strongest loop: one compiled "
        f"program per step, dispatched asynchronously) takes {loop['ratio']:.2f}x the scan's; the same loop with "
        f"no jit, op by op, {eager['ratio']:.1f}x; the loop unrolled inside jit {unrolled['ratio']:.2f}x per step "
        f"and {unrolled['compile_s'] / scan['compile_s']:.1f}x the scan's compile time.",
    ]
    if result["torch"]:
        text.append(f"PyTorch {result['torch']['version']} ({result['torch']['threads']} threads), its own "
                    "parameters at the same sizes; its 'compile' column is the first step (no compiler).")
    else:
        text.append("PyTorch: not measured (not installed, or --torch=false).")
    return "\n".join(text)


def _memory_cell(row):
    value = row["device_peak_mib"] if row["device_peak_mib"] is not None else row["peak_rss_mib"]
    growth = "" if row["device_peak_mib"] is not None else f" (+{row['rss_growth_mib']:.0f})"
    return f"{value:.0f}{growth}"


def train_section(result, host):
    text = []
    runs = result["runs"]
    for run in runs:
        memory = ("device peak_bytes_in_use, MiB" if run["memory"].startswith("device")
                  else "process peak RSS after the stage, MiB (+ growth during it)")
        text += [
            f"### {run['devices']} x {run['device_kind']}",
            "",
            f"{run['steps']} timed steps after the first; global batch, split over the devices; "
            f"memory: {memory}; FLOPs per step: XLA's cost analysis of one device's program.",
            "",
            _table(["stage", "global batch", "compile s", "steps/s", "examples/s", "peak memory", "GFLOP/step",
                    "MFU"], [
                [row["stage"], f"{row['batch']} {row['examples']}", f"{row['compile_s']:.2f}",
                 f"{row['steps_per_s']:.1f}", f"{row['examples_per_s']:.0f}", _memory_cell(row),
                 f"{row['flops_per_step'] / 1e9:.3f}" if row["flops_per_step"] else "-",
                 f"{100 * row['mfu']:.2f}%" if "mfu" in row else "-"]
                for row in run["stages"]
            ]),
            "",
        ]
        if run["generation_ms"] is not None:
            text += [f"One neutral face -> {run['num_modes']} landmark sequences: median "
                     f"{run['generation_ms']:.1f} ms after warm-up.", ""]
    if any(row["stage"] == "translator (bf16)" for row in runs[0]["stages"]):
        text += ["translator (bf16): the same stage computing in bfloat16 (`config.translator.dtype`; parameters "
                 "float32), for accelerators with bf16 matrix units"
                 + ("." if host["accelerator"] else "; a CPU without them runs it slower than float32."), ""]
    if len(runs) > 1:
        base = {row["stage"]: row["steps_per_s"] for row in runs[0]["stages"]}
        header = ["stage"] + [f"{run['devices']} device(s) steps/s" for run in runs] + [
            f"{run['devices']} vs {runs[0]['devices']}" for run in runs[1:]]
        text += ["### Devices, same global batch", "", _table(header, [
            [name] + [f"{next(r['steps_per_s'] for r in run['stages'] if r['stage'] == name):.1f}" for run in runs]
            + [f"{next(r['steps_per_s'] for r in run['stages'] if r['stage'] == name) / base[name]:.2f}x"
               for run in runs[1:]]
            for name in base
        ]), ""]
        if runs[0]["platform"] == "cpu":
            text += ["The devices are forced CPU devices (`--xla_force_host_platform_device_count`) sharing "
                     "this machine's cores: the ratio shows the data-parallel program's overhead, not a "
                     "second processor's speed.", ""]
    if host["accelerator"]:
        peak = runs[0]
        text.append(f"MFU against {peak['peak_tflops']} TFLOP/s per device ({peak['peak_source']}); "
                    f"the bf16 translator's against {peak.get('peak_tflops_bf16')} TFLOP/s (bf16 dense).")
    else:
        text.append("MFU: no accelerator was available for this run.")
    return "\n".join(text)


def cache_section(result, host):
    rows = [[row["stage"], f"{row['cold_compile_s']:.2f}", f"{row['warm_compile_s']:.2f}",
             f"{row['saving_s']:.2f} s ({100 * row['saving_s'] / row['cold_compile_s']:.0f}%)"]
            for row in result["stages"]]
    cold = sum(row["cold_compile_s"] for row in result["stages"])
    warm = sum(row["warm_compile_s"] for row in result["stages"])
    return "\n".join([
        f"Two fresh `train_throughput` processes ({result['device']}) on one new cache directory: the first "
        "writes it (cold), the second reads it (warm). Per stage, the first step's seconds (tracing + "
        "lowering + compiling or loading + one step).",
        "",
        _table(["stage", "cold s", "warm s", "saved"], rows),
        "",
        f"**All stages: {cold:.1f} s cold, {warm:.1f} s warm ({cold / warm:.1f}x).** Whole process "
        f"(imports and start-up included): {result['cold_wall_s']:.1f} s cold, {result['warm_wall_s']:.1f} s warm. "
        f"The cold run wrote {result['entries_written']} cache entries "
        f"({result['bytes_written'] / 2**20:.1f} MiB); the warm run added {result['entries_added_by_warm_run']}."
        + ("" if result["entries_written"] else " **The cache wrote nothing on this JAX version and platform.**"),
    ])


def sample_section(result, host):
    warp = result["warp_s"]

    def cell(seconds):
        return f"{seconds * 1e3:.1f} ms ({seconds / result['frames'] * 1e3:.3f} ms/frame)"

    text = [
        f"{result['frames']} frames ({result['num_modes']} smile paths x {result['num_frames']} frames) of the "
        f"astronaut's aligned crop; median of {result['repeats']} after a warm-up call ({result['device']}).",
        "",
        _table(["what", "time"], [
            ["JAX warp 64x64, mouth interior and folds (default)", cell(warp["jax_default"])],
            ["JAX warp 64x64, bare", cell(warp["jax_bare"])],
            ["scikit-image PiecewiseAffineTransform + warp", cell(warp["skimage"])],
            ["JAX warp 256x256, mouth interior and folds", cell(warp["jax_default_256"])],
        ]),
        "",
        f"**Ratio in this run:** the JAX warp is {warp['skimage'] / warp['jax_default']:.0f}x faster than "
        f"scikit-image ({warp['skimage'] / warp['jax_bare']:.0f}x bare).",
    ]
    for renderer, parts in result["sampling_s"].items():
        run = ("`runs/smile` of the README command 1 timed above" if result["workdir"].endswith("/clone/runs/smile")
               else f"`{result['workdir']}`")
        text += ["", f"One photo -> {result['num_modes']} videos with {run}, {renderer} renderer:",
                 "", _table(["part", "time"], [[name, f"{seconds * 1e3:.1f} ms"] for name, seconds in parts.items()])]
    if not result["sampling_s"]:
        text += ["", "No trained run given (`--workdir`): the whole photo -> videos sampling was not timed."]
    return "\n".join(text)


def preprocess_section(result, host):
    return "\n".join([
        f"One 1920x1080, 50 fps fake smile of {result['num_frames']} frames, the whole per-video "
        f"preprocessing of every frame, one process, median of {result['repeats']}.",
        "",
        _table(["mode", "frames/s", "detector calls", "landmark NME vs known points"], [
            [name, f"{mode['frames_per_s']:.1f}", f"{mode['detector_calls']} / {mode['frames']}", f"{mode['nme']:.4f}"]
            for name, mode in result["modes"].items()
        ]),
        "",
        f"**Ratio in this run: tracking is {result['ratio']:.1f}x per-frame detection.** The default clip "
        f"(32 frames at 10 fps of a 170-frame 1080p video): {result['clip_s']:.2f} s per video.",
    ])


SECTIONS = {  # name -> (title, renderer)
    "recurrent_scan": ("Recurrent stage: `lax.scan` against Python loops", recurrent_section),
    "train_throughput": ("Training throughput per stage", train_section),
    "compile_cache": ("Persistent compilation cache", cache_section),
    "sample_latency": ("Sampling: the JAX warp against scikit-image, one photo -> videos", sample_section),
    "preprocess_throughput": ("Preprocessing: detect once and track, against per-frame detection", preprocess_section),
}


def command1(folder):
    """README command 1 in a fresh clone of HEAD under folder; -> its outcome dict."""
    clone = os.path.join(folder, "clone")
    subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
    with open(os.path.join(clone, "README.md")) as f:
        line = next(line.strip() for line in f if line.startswith("python3 -m venv") and "cmm_jax.main" in line)
    print("$ (fresh clone)", line, flush=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(folder, "compilation_cache"))
    env.pop("VIRTUAL_ENV", None)
    start = time.perf_counter()
    result = subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    workdir = os.path.join(clone, "runs", "smile")
    if result.returncode != 0:
        return {"args": [line], "result": None, "output": "", "workdir": None,
                "error": f"exit code {result.returncode}: {result.stderr[-2000:]}"}
    with open(os.path.join(workdir, "timings.json")) as f:
        phases = json.load(f)
    last = result.stderr.strip().splitlines()[-1]
    return {"args": [line], "result": {"wall_s": wall, "phases": phases}, "output": last, "workdir": workdir,
            "error": None}


def command1_section(result, host):
    phases = result["phases"]
    top = {name: seconds for name, seconds in phases.items() if "/" not in name}
    rest = result["wall_s"] - sum(top.values())
    rows = [[name + (f" (first step {phases[name + '/first_step']:.1f})" if name + "/first_step" in phases else ""),
             f"{seconds:.1f}"] for name, seconds in top.items()]
    rows.append(["venv, pip install, Python and JAX start-up (the rest)", f"{rest:.1f}"])
    return "\n".join([
        "README command 1 (`experiments/smile.py`: every stage, evaluation with every baseline, samples) in a "
        "fresh clone of the commit above, with an empty compilation cache and pip's download cache as it was; "
        "seconds per phase from the run's `timings.json`.",
        "",
        _table(["phase", "seconds"], rows),
        "",
        f"**Wall time: {result['wall_s']:.0f} s ({result['wall_s'] / 60:.1f} minutes).**",
    ])


def write_results(path, command, host, outcomes, quick):
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.run_all`; do not edit by hand (the hand-written history of "
        "earlier measurements is [HISTORY.md](HISTORY.md)).",
        "",
        f"- command: `{command}`" + (" (**--quick: tiny settings, the numbers mean nothing**)" if quick else ""),
        f"- date: {host['date']}, commit {host['commit']}",
        f"- CPU: {host['cpu']}, {host['cores']} cores, "
        + (f"{host['memory_gib']:.1f} GiB RAM" if host["memory_gib"] else "RAM unknown")
        + f"; load average at the start {host['load'][0]:.2f}, at the end {host['end_load'][0]:.2f}",
        f"- devices: {host['devices']}; {host['os']}, Python {host['python']}",
        "- " + ", ".join(f"{name} {version}" for name, version in host["versions"].items()),
        "",
    ]
    for name, (title, render) in {"command1": ("README command 1, timed", command1_section), **SECTIONS}.items():
        if name == "command1" and name not in outcomes:
            continue
        lines += [f"## {title}", ""]
        if name not in outcomes:
            lines += ["Not run (--only).", ""]
            continue
        outcome = outcomes[name]
        shown = outcome["args"][0] if name == "command1" else f"python -m benchmarks.{name} {' '.join(outcome['args'])}"
        lines += [f"`{shown}`", ""]
        if outcome["error"]:
            lines += ["**Failed:**", "", "```", outcome["error"].strip(), "```", ""]
            continue
        lines += [render(outcome["result"], host), ""]
        output = outcome["output"]
        lines += ["<details><summary>printed output</summary>", "", "```", output.strip(), "```", "",
                  "</details>", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv):
    del argv
    unknown = set(_ONLY.value) - set(BENCHMARKS)
    if unknown:
        raise app.UsageError(f"unknown benchmarks {sorted(unknown)}; they are {','.join(BENCHMARKS)}")
    command = " ".join(["python -m benchmarks.run_all", *sys.argv[1:]])
    host = machine()
    outcomes = {}
    with tempfile.TemporaryDirectory() as folder:
        workdir = _WORKDIR.value
        if _COMMAND1.value:
            outcomes["command1"] = command1(folder)
            workdir = outcomes["command1"]["workdir"] or workdir
        for name, (full, quick) in BENCHMARKS.items():
            if _ONLY.value and name not in _ONLY.value:
                continue
            args = list(quick if _QUICK.value else full)
            if name == "sample_latency" and workdir:
                args.append(f"--workdir={workdir}")
            result, output, error = run_benchmark(name, args, folder)
            outcomes[name] = {"args": args, "result": result, "output": output, "error": error}
        if _KEEP.value and _COMMAND1.value and outcomes["command1"]["workdir"]:
            shutil.copytree(outcomes["command1"]["workdir"], _KEEP.value)
    host["end_load"] = os.getloadavg()
    write_results(_OUT.value, command, host, outcomes, _QUICK.value)
    print(f"wrote {_OUT.value}")
    if any(outcome["error"] for outcome in outcomes.values()):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
