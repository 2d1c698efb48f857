"""Many processes, one run: two processes on localhost (jax.distributed over
gloo, one CPU device each) train the tiny config's vae and recurrent stages
as one run, and match a one-process run on the same global batches."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from cmm_jax import distributed, run_dir, sharding, stages, train
from cmm_jax.checkpoint import Checkpointer
from cmm_jax.data import pipeline
from cmm_jax.errors import UserError
from experiments import tiny

from conftest import REPO
from distributed_worker import flat_params

try:
    from jax._src.lib import _jax as _jaxlib
    GLOO = hasattr(_jaxlib, "make_gloo_tcp_collectives")
except ImportError:
    GLOO = False
needs_gloo = pytest.mark.skipif(
    not GLOO, reason="this jaxlib has no gloo CPU collectives (jax._src.lib._jax.make_gloo_tcp_collectives), "
                     "which two CPU processes need to train as one")

WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
STAGES = ("vae", "recurrent")
STEPS = 4
# The run both settings make: config key -> value (the pair gets them as --config.KEY=VALUE).
SETTINGS = {"stages": ",".join(STAGES), "log_every": 2, "checkpoint_every": 2, "evaluate": False,
            **{f"{stage}.steps": STEPS for stage in STAGES}}
PAIR_TIMEOUT_S = 400
# Measured: the pair and one process with two devices agree to the last bit on
# this machine (max relative difference 0); the bound leaves room for another
# summation order in the all-reduce.
RTOL, ATOL = 1e-5, 1e-7


def _config(data_dir):
    config = tiny.get_config()
    config.dataset.data_dir = data_dir
    for key, value in SETTINGS.items():
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_pair(workdir, data_dir, out, settings):
    """Runs tests/distributed_worker.py as processes 0 and 1 of one run with
    the config `settings`, their parameters and logs to `out`; fails the test
    with both processes' output if either fails or times out. -> process 0's log."""
    out.mkdir()
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    logs = [out / f"process_{i}.log" for i in range(2)]
    processes = []
    for i, log in enumerate(logs):
        command = [
            sys.executable, WORKER, "--config=experiments/tiny.py", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", *(f"--config.{k}={v}" for k, v in settings.items()),
            f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
            f"--params_out={out}",
        ]
        with open(log, "w") as f:
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT))
    deadline = time.time() + PAIR_TIMEOUT_S
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    codes = [process.returncode for process in processes]
    if codes != [0, 0]:
        report = "\n".join(f"--- process {i} (exit code {code}):\n{log.read_text()[-4000:]}"
                           for i, (code, log) in enumerate(zip(codes, logs)))
        pytest.fail(f"the two-process run failed or ran past {PAIR_TIMEOUT_S} s:\n{report}", pytrace=False)
    return logs[0].read_text()


def _load_params(out) -> list[dict]:
    """Each process's parameters, as the worker saved them."""
    params = []
    for i in range(2):
        with np.load(out / f"params_{i}.npz") as f:
            params.append(dict(f))
    return params


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The pair's run (its workdir, log and each process's parameters), the
    pair started again on it with only the recurrent stage, and a one-process
    run of the same config on this process's two CPU devices. The pair builds
    the dataset (process 0 first: `distributed.primary_first`)."""
    root = tmp_path_factory.mktemp("distributed")
    data_dir = os.fspath(root / "tfds")
    timings = {}
    started = time.time()
    log = _run_pair(root / "pair", data_dir, root / "first", SETTINGS)
    timings["two processes"] = time.time() - started
    started = time.time()
    log_again = _run_pair(root / "pair", data_dir, root / "again", dict(SETTINGS, stages="recurrent"))
    timings["two processes, again"] = time.time() - started
    started = time.time()
    _, models = train.train(_config(data_dir), os.fspath(root / "one"))
    timings["one process"] = time.time() - started
    print("; ".join(f"{name}: {seconds:.1f} s" for name, seconds in timings.items()))
    return {"pair": root / "pair", "one": root / "one", "data_dir": data_dir, "log": log, "log_again": log_again,
            "processes": _load_params(root / "first"), "processes_again": _load_params(root / "again"),
            "one_params": flat_params(models)}


def _max_relative_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(b[k]) + ATOL / RTOL))) for k in b)


def test_pipeline_gives_each_process_its_rows_of_the_one_process_batch(tiny_data_dir):
    source = pipeline.load_builder(_config(tiny_data_dir).dataset).as_data_source("train")
    one = pipeline.train_iterator(source, 8, seed=3)
    halves = [pipeline.train_iterator(source, 4, seed=3, process_index=i, process_count=2) for i in range(2)]
    for _ in range(2 * len(source) // 8 + 1):  # past the end of two epochs
        expected = next(one)
        parts = [next(h) for h in halves]
        for key, value in expected.items():
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value)
    assert halves[0].get_state() == halves[1].get_state() == one.get_state()
    with pytest.raises(UserError, match="fewer than the batch of"):
        pipeline.train_iterator(source, len(source) // 2 + 1, seed=0, process_index=1, process_count=2)


@pytest.mark.parametrize("arguments, message", [
    (dict(process_id=1), "--process_id needs --coordinator_address and --num_processes"),
    (dict(coordinator_address="localhost:1234", num_processes=2), "--num_processes need --process_id"),
    (dict(process_id=0, detect=True), "--process_id needs --num_processes"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), r"--process_id must be in 0\.\.1"),
    (dict(coordinator_address="localhost:1234", num_processes=0, process_id=0), "--num_processes must be >= 1"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "must be host:port"),
])
def test_bad_cluster_flags_are_user_errors(arguments, message):
    with pytest.raises(UserError, match=message):
        distributed.initialize(**arguments)


def test_no_flags_no_cluster():
    assert distributed.initialize() is False
    assert jax.process_count() == 1


def test_main_stops_on_bad_cluster_flags_with_one_line(tmp_path):
    command = [sys.executable, "-m", "cmm_jax.main", "--config=experiments/tiny.py",
               f"--workdir={tmp_path}", "--process_id=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: --process_id needs")


@needs_gloo
def test_both_processes_end_with_the_same_parameters(runs):
    assert "data-parallel over 2 device(s) in 2 process(es)" in runs["log"]
    first, second = runs["processes"]
    assert sorted(first) == sorted(runs["one_params"])
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@needs_gloo
def test_two_processes_match_one_process_on_the_same_batches(runs):
    pair, one = runs["processes"][0], runs["one_params"]
    print(f"max relative difference of the parameters: {_max_relative_difference(pair, one):.3g}")
    for key in one:
        np.testing.assert_allclose(pair[key], one[key], rtol=RTOL, atol=ATOL, err_msg=key)
    # Only process 0 writes the metrics: each logged step once, the one-process run's losses.
    logged = [[json.loads(line) for line in (runs[run] / "metrics.jsonl").read_text().splitlines()]
              for run in ("pair", "one")]
    assert [(r["stage"], r["step"]) for r in logged[0]] == [(s, n) for s in STAGES for n in (2, 4)]
    for mine, theirs in zip(*logged):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=RTOL)
    for name in ("config.json", "dataset_info.json", "input_range.json"):
        assert (runs["pair"] / name).is_file()


@needs_gloo
def test_one_process_restores_the_pairs_checkpoint(runs):
    config = _config(runs["data_dir"])
    info = run_dir.load_dataset_info(os.fspath(runs["pair"]), config)
    mesh = sharding.make_mesh()
    for stage in STAGES:
        states = []
        for run in ("pair", "one"):
            checkpointer = Checkpointer(run_dir.checkpoint_dir(os.fspath(runs[run]), stage))
            assert checkpointer.latest_step() == STEPS
            states.append(checkpointer.restore(train._abstract_state(stage, config, info, mesh)))
            checkpointer.close()
        (pair_state, pair_data), (one_state, one_data) = states
        assert int(pair_state.step) == STEPS and pair_data == one_data
        graphdef = nnx.graphdef(stages.STAGES[stage].abstract(config, info))
        restored = flat_params({stage: nnx.merge(graphdef, pair_state.params)})
        for key, value in restored.items():
            np.testing.assert_array_equal(value, runs["processes"][0][key], err_msg=key)
        for a, b in zip(jax.tree.leaves(pair_state.opt_state), jax.tree.leaves(one_state.opt_state)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


@needs_gloo
def test_the_pair_restores_its_own_checkpoints(runs):
    """Started again with only the recurrent stage: both processes load the vae
    (`run_dir.load_model`) and restore the finished recurrent stage
    (`Checkpointer.restore`) on the two-process mesh."""
    assert "recurrent: resumed from step 4" in runs["log_again"]
    for again in runs["processes_again"]:
        assert sorted(again) == sorted(runs["processes"][0])
        for key, value in again.items():
            np.testing.assert_array_equal(value, runs["processes"][0][key], err_msg=key)
