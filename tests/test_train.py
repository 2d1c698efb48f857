"""The training loop on the tiny config: sharding, resume, bad configs."""

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from cmm_jax import checkpoint, configuration, metric_writer, run_dir, sharding, train
from cmm_jax.data import pipeline
from cmm_jax.errors import UserError, run_or_exit
from experiments import tiny

from conftest import REPO, TINY_RUN_FLAGS


def _config(data_dir):
    config = tiny.get_config()
    config.dataset.data_dir = data_dir
    return config


def _run_main(workdir, data_dir, *overrides, wait=True):
    command = [
        sys.executable, "-m", "cmm_jax.main", "--config=experiments/tiny.py",
        f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", *overrides,
    ]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_sharded_step_matches_one_device(tiny_data_dir):
    assert jax.device_count() == 2, "conftest forces two CPU devices"
    config = _config(tiny_data_dir)
    builder = pipeline.load_builder(config.dataset)
    info = pipeline.dataset_info(builder)
    source = builder.as_data_source("train")
    batch = next(pipeline.train_iterator(source, config.vae.batch_size, seed=0))
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:2]):
        mesh = sharding.make_mesh(devices)
        graphdef, state, tx = train.init_state("vae", config, info)
        step = train.make_train_step("vae", config, graphdef, {}, tx, mesh)
        state = sharding.replicate(state, mesh)
        sharded = sharding.shard_batch(batch, mesh)
        assert len(sharded["landmarks"].sharding.device_set) == len(devices)
        state, metrics = step(state, {}, sharded)
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    (loss_1, params_1), (loss_2, params_2) = results
    assert loss_1 == pytest.approx(loss_2, rel=1e-5)
    for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_killed_run_resumes_to_the_same_eval(tmp_path, tiny_data_dir, tiny_workdir):
    # The session's run (conftest.py) is the same command, never interrupted.
    expected = json.loads((Path(tiny_workdir) / "eval.json").read_text())
    # The test split, named; every baseline scored beside the model.
    assert expected["split"] == "test"
    assert {"model_k1", "face_blind", "nearest_neighbour", "oracle", "oracle_face", "real"} <= set(expected["baselines"])
    assert expected["baselines"]["face_blind"]["face_sensitivity"] < 0.01
    assert 0.0 <= expected["implausible_rate"] <= 1.0 and expected["landmark_fd"] >= 0.0

    workdir = tmp_path / "killed"
    process = _run_main(workdir, tiny_data_dir, *TINY_RUN_FLAGS, wait=False)
    checkpoint = workdir / "checkpoints" / "multimode" / "10"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), process.stderr.read().decode()[-3000:]
    assert not (workdir / "eval.json").exists(), "the run ended before it could be killed"
    assert not (workdir / "checkpoints" / "multimode" / "60").exists()

    resumed = _run_main(workdir, tiny_data_dir, *TINY_RUN_FLAGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "multimode: resumed from step" in resumed.stderr
    assert json.loads((workdir / "eval.json").read_text()) == expected
    # Each logged step appears once, even though the killed run logged past 10.
    steps = [
        r["step"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
        if r["stage"] == "multimode"
    ]
    assert steps == sorted(set(steps))

    # What a run leaves for people to look at.
    for name in ("metrics.jsonl", "eval.json", "config.json"):
        assert (workdir / name).exists()
    # Where the (resumed) run's time went: the stage it trained, evaluation, samples.
    phases = json.loads((workdir / "timings.json").read_text())
    assert {"data", "multimode", "multimode/first_step", "evaluate", "samples"} <= set(phases)
    assert "vae" in phases and "vae/first_step" not in phases  # restored, not trained again
    assert all(seconds >= 0 for seconds in phases.values())
    assert resumed.stderr.strip().splitlines()[-1].startswith("time: ")
    samples = os.listdir(workdir / "samples")
    assert {"input0_posed.png", "input0_posed.gif", "input0_spontaneous.mp4"} <= set(samples)
    assert os.listdir(workdir / "tensorboard")


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.dataset.name=celeba", "unknown dataset"),
        ("--config.num_modes=0", "num_modes must be"),
        ("--config.vae.batch_size=7", "must be a positive multiple of the device count"),
        ("--config.stages=vae,gan", "unknown stage"),
        ("--config.multimode.train_timing=oracle", "train_timing must be one of"),
        ("--config.translator.dtype=float16", "translator.dtype must be one of"),
        ("--config.vae.hiden=3", "the config has no field 'hiden' (did you mean 'hidden'?)"),
    ],
)
def test_bad_config_values_fail_with_one_line(tmp_path, override, message):
    result = _run_main(tmp_path / "run", str(tmp_path / "data"), override)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last


def test_a_run_of_the_first_stage_only_leaves_evaluation_for_later(tmp_path, tiny_data_dir):
    """--config.stages=vae (training stage by stage): the VAE trains, and the run
    ends well, saying that evaluation waits for the classifier; before, it ended
    with an error and exit code 2."""
    result = _run_main(tmp_path / "run", tiny_data_dir, "--config.stages=vae")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval: skipped until the classifier stage is trained (--config.stages=classifier)" in result.stderr
    assert (tmp_path / "run" / "checkpoints" / "vae").is_dir() and not (tmp_path / "run" / "eval.json").exists()


def test_a_run_that_trains_no_stage_keeps_the_trained_config(tmp_path, tiny_workdir):
    """An evaluation-only run (--config.stages= with other settings) leaves
    config.json as training wrote it: sampling still reads the trained
    multimode.spread, and a stage trained with other model options is still
    refused (before, the run wrote its own config over the trained one, and the
    check then compared the config with itself)."""
    run = tmp_path / "run"
    shutil.copytree(os.path.join(tiny_workdir, "checkpoints", "recurrent"), run / "checkpoints" / "recurrent")
    config = json.loads(Path(tiny_workdir, "config.json").read_text())
    config["load_from"] = str(tiny_workdir)  # the other stages
    (run / "config.json").write_text(json.dumps(config))
    shutil.copy(os.path.join(tiny_workdir, "dataset_info.json"), run / "dataset_info.json")
    written = (run / "config.json").read_text()

    other = run_dir.load_config(str(run))
    other.stages = ""
    other.multimode.spread = 1.0
    trained = other.recurrent.relative_input
    other.recurrent.relative_input = not trained
    train.train(other, str(run))
    assert (run / "config.json").read_text() == written
    assert (run / "input_range.json").is_file()  # what training leaves is still measured
    info = run_dir.load_dataset_info(str(run), other)
    with pytest.raises(UserError, match=f"recurrent.relative_input={trained}"):
        run_dir.load_model("recurrent", other, info, str(run), sharding.make_mesh())


def test_a_config_file_that_fails_to_load_is_one_line(tmp_path):
    """Its own error, where it happened: not absl's traceback through the loader,
    nor (for an AttributeError in the file) a wrong "the config has no field"."""
    config = tmp_path / "mine.py"
    config.write_text("from experiments import tiny\n\n\ndef get_config():\n    return tiny.get_config().vea\n")
    result = subprocess.run([sys.executable, "-m", "cmm_jax.main", f"--config={config}", f"--workdir={tmp_path / 'run'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the config file {config} fails at line 5: AttributeError")
    missing = subprocess.run([sys.executable, "-m", "cmm_jax.evaluate", f"--config={tmp_path / 'none.py'}",
                              f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no config file {tmp_path / 'none.py'}"
    assert not (tmp_path / "run").exists()


def test_unwritable_workdir_fails_with_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = _run_main(blocker / "run", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "not writable" in last


# A child process saves step 1, then, under a file-size limit (writes past 100 kB
# fail with EFBIG, as on a full disk), two larger steps; it prints how that ended.
FILLED_DISK = """
import resource, signal, sys
import jax
from cmm_jax.checkpoint import Checkpointer
from cmm_jax.errors import run_or_exit

checkpointer = Checkpointer(sys.argv[1])
state = {f"w{i}": jax.random.normal(jax.random.PRNGKey(i), (30_000,)) for i in range(20)}
checkpointer.save(1, {k: v[:10] for k, v in state.items()}, {"position": 1})
checkpointer.wait()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

def save():
    checkpointer.save(2, state, {"position": 2})
    checkpointer.save(3, state, {"position": 3})
    checkpointer.wait()

run_or_exit(save)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX file-size limits")
def test_a_checkpoint_that_fills_the_disk_fails_with_one_line(tmp_path):
    """A save that fails mid-write (Orbax's background threads): one `error:`
    line naming the reason and the step to continue from, exit code 2, no
    traceback, and the earlier checkpoint still restores."""
    result = subprocess.run([sys.executable, "-c", FILLED_DISK, str(tmp_path / "ck")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write a checkpoint in {tmp_path / 'ck'}: File too large; step 1, the last complete "
        "checkpoint, is intact and a rerun continues from it"], result.stderr
    checkpointer = checkpoint.Checkpointer(str(tmp_path / "ck"))
    assert checkpointer.latest_step() == 1
    abstract = {f"w{i}": jax.ShapeDtypeStruct((10,), np.float32) for i in range(20)}
    state, data_state = checkpointer.restore(abstract)
    np.testing.assert_array_equal(state["w3"], jax.random.normal(jax.random.PRNGKey(3), (30_000,))[:10])
    assert data_state == {"position": 1}


def test_a_checkpoint_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    saver = checkpoint.Checkpointer(str(tmp_path / "ck"))
    state = {"w": np.ones((1000,), np.float32)}
    saver.save(1, state, {})
    saver.wait()
    usage = checkpoint.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage._replace(free=1 << 19))
    with pytest.raises(UserError, match=r"not enough disk space .*: 0.5 MiB free here, a save needs about 1.0 MiB; "
                                        r"step 1, the last complete checkpoint, is intact"):
        saver.save(2, state, {})
    saver.close()
    assert sorted(os.listdir(tmp_path / "ck")) == ["1"]


def test_a_full_disk_is_one_line_at_any_entry_point(capsys):
    """Any write that finds no room (eval.json, metrics.jsonl, a video...):
    one line naming the file, exit code 2; other OS errors keep their traceback."""

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/smile/eval.json")

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(full)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: cannot write /runs/smile/eval.json: No space left on device\n"

    def missing():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere")

    with pytest.raises(FileNotFoundError):
        run_or_exit(missing)


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(interrupted)
    assert exit_info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX file-size limits")
def test_metric_lines_stay_whole_when_the_disk_fills(tmp_path):
    """metrics.jsonl: an append that fails part way (a file-size limit, as on a
    full disk) is cut back off and names the file; a line cut short by a kill is
    dropped when a resumed run rewrites the file, the whole lines kept."""
    path = str(tmp_path / "metrics.jsonl")
    line = (json.dumps({"stage": "vae", "step": 1, "loss": 0.5}) + "\n").encode()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(line) * 5 // 2, hard))
    try:
        metric_writer._append_line(path, line)
        metric_writer._append_line(path, line)
        with pytest.raises(OSError) as error:
            metric_writer._append_line(path, line)  # half of it fits
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert error.value.filename == path and error.value.errno == errno.EFBIG
    with open(path, "rb") as f:
        assert f.read() == line * 2
    with open(path, "ab") as f:
        f.write(line[:10])  # a kill mid-line
    writer = metric_writer.MetricWriter(path, str(tmp_path / "tensorboard"))
    writer.forget_after("vae", 1)
    writer.close()
    with open(path, "rb") as f:
        assert f.read() == line * 2


@pytest.mark.parametrize("field, value, message", [
    ("seed", -1, "seed must be an integer in [0, "),
    ("vae.latent_dim", 0, "vae.latent_dim must be an integer >= 1, got 0"),
    ("recurrent.hidden", -3, "recurrent.hidden must be an integer >= 1"),
    ("translator.num_levels", 2.5, "translator.num_levels must be an integer >= 1"),
    ("eval.max_inputs", -5, "eval.max_inputs must be an integer >= 0"),
    ("recurrent.face_noise", -0.5, "recurrent.face_noise must be >= 0, got -0.5"),
    ("multimode.assignment", "balance", "multimode.assignment must be one of balanced, wta, mean, got 'balance'"),
])
def test_config_values_that_would_crash_are_refused(tmp_path, field, value, message):
    """Values that would fail deep inside JAX, NumPy or an initialiser (a
    negative seed, a zero-width layer) are one UserError before anything runs."""
    config = tiny.get_config()
    holder = config
    *path, key = field.split(".")
    for name in path:
        holder = holder[name]
    with holder.ignore_type():
        setattr(holder, key, value)
    with pytest.raises(UserError, match=re.escape(message)):
        configuration.validate(config, str(tmp_path))
