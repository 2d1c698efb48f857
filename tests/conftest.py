"""Two CPU devices for every test, so the data-parallel path always runs."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """One TFDS data_dir for the tiny synthetic dataset, built once per session."""
    return str(tmp_path_factory.mktemp("tfds"))
