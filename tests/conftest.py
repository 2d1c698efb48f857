"""Two CPU devices for every test, so the data-parallel path always runs."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import subprocess  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """One TFDS data_dir for the tiny synthetic dataset, built once per session."""
    return str(tmp_path_factory.mktemp("tfds"))


# The session's run trains the multi-mode stage for 60 steps, so that the same
# run killed at its step 10 has far to go (tests/test_train.py).
TINY_RUN_FLAGS = ("--config.multimode.steps=60",)


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory, tiny_data_dir):
    """A run of the tiny config (python -m cmm_jax.main), trained once: every
    stage, its evaluation (eval.json) and its samples."""
    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    command = [
        sys.executable, "-m", "cmm_jax.main", "--config=experiments/tiny.py",
        f"--workdir={workdir}", f"--config.dataset.data_dir={tiny_data_dir}", *TINY_RUN_FLAGS,
    ]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")  # as tests/test_train.py's runs
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir
