"""The notebooks of notebooks/: how they are stored (no outputs, the badge, one
set-up cell, defaults of the real runs), and each run top to bottom on CPU with
tiny settings (marker `notebooks`).

A run executes the notebook with nbclient in a kernel of this very Python, in a
temporary copy of the checkout (so nothing is written into the repository),
started in its notebooks/ folder as Jupyter would be. The tiny settings go in a
cell inserted after the one tagged `parameters`, as papermill does; the
notebook's own cells are run unchanged. quickstart trains the run that
batch_sampling then samples; train_real_data trains on a fake UvA-NEMO copy
(`python -m cmm_jax.data.fake`) standing in for the Drive folder.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime

import imageio.v3 as iio
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from cmm_jax.configuration import STAGE_ORDER
from conftest import REPO
from experiments import smile, summarize, uva_nemo

# The kernels, git and the fake-data generator start by subprocess (fork and exec at
# once), which JAX's warning about fork in this threaded process does not concern.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

NOTEBOOKS = ("quickstart", "train_real_data", "batch_sampling")
CELL_TIMEOUT = 1200  # seconds; training a tiny run takes 1-3 minutes on a shared 2-core CPU
BADGE = re.compile(r"^\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\(https://colab\.research\.google\.com/github/(?P<repository>[^/]+/[^/]+)/blob/main/"
                   r"notebooks/(?P<name>\w+)\.ipynb\)")
VIDEO = "data:video/mp4;base64,"

TINY_STEPS = {stage: 4 for stage in STAGE_ORDER}
QUICKSTART = {
    "CONFIG": "experiments/tiny.py",  # 3 modes, small networks, 12 training people
    "NUM_MODES": 3,
    "STEPS": TINY_STEPS,
    "OVERRIDES": {"eval.max_inputs": 4},
}
# Clips of 8 frames from the fake copy's 40-frame videos, as tests/test_video_datasets.py.
REAL_DATA = {
    "CLIP": {"num_frames": 8, "fps": 10.0, "min_frames": 4},
    "WORKERS": 2,
    "NUM_MODES": 2,
    "STEPS": TINY_STEPS,
    "OVERRIDES": {
        **{f"{stage}.batch_size": 2 for stage in STAGE_ORDER},
        "log_every": 2, "checkpoint_every": 4, "vae.latent_dim": 8, "vae.hidden": 32, "classifier.hidden": 16,
        "classifier.features": 16, "judge.hidden": 16, "judge.features": 16, "recurrent.hidden": 16,
        "multimode.hidden": 16, "translator.features": 8, "translator.disc_features": 8,
        "translator.frames_per_clip": 2, "eval.num_sample_inputs": 1,
    },
}


def read(name: str, root: str = REPO):
    return nbformat.read(os.path.join(root, "notebooks", f"{name}.ipynb"), as_version=4)


def parameters_cell(nb) -> int:
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    return tagged[0]


def defaults(nb) -> dict:
    """The parameter cell's values (it is plain assignments)."""
    namespace: dict = {}
    exec(nb.cells[parameters_cell(nb)].source, namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def outputs(cell) -> str:
    """All a cell showed: streams, errors, and the text, Markdown and HTML of displays."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        else:
            parts += [output.data.get(kind, "") for kind in ("text/plain", "text/markdown", "text/html")]
    return "\n".join(parts)


def cell_with(nb, snippet: str):
    [cell] = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    return cell


def displays(cell, kind: str) -> list[str]:
    return [o.data[kind] for o in cell.outputs if o.output_type == "display_data" and kind in o.data]


# ---------------------------------------------------------------------------
# How they are stored


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: run outputs in\n{cell.source}"


def test_badge_setup_cell_and_parameters():
    """Each opens with its own Colab badge, then the one set-up cell shared by all,
    whose REPOSITORY is the badge's; the parameters come after it."""
    setups = set()
    for name in NOTEBOOKS:
        nb = read(name)
        badge = BADGE.match(nb.cells[0].source)
        assert nb.cells[0].cell_type == "markdown" and badge, f"{name}: no Colab badge first"
        assert badge["name"] == name
        setup = nb.cells[1]
        assert setup.cell_type == "code" and "jax.default_backend()" in setup.source
        assert f'REPOSITORY = "{badge["repository"]}"' in setup.source
        assert parameters_cell(nb) > 1
        setups.add(setup.source)
    assert len(setups) == 1, "the notebooks' set-up cells differ"


def test_defaults_are_the_real_runs():
    quickstart = defaults(read("quickstart"))
    config = smile.get_config()
    assert quickstart["CONFIG"] == "experiments/smile.py" and quickstart["OVERRIDES"] == {}
    assert quickstart["NUM_MODES"] == config.num_modes
    assert quickstart["STEPS"] == {stage: config[stage].steps for stage in STAGE_ORDER}

    real = defaults(read("train_real_data"))
    assert real["DATASET"] == "uva_nemo" and real["MANUAL_DIR"].startswith("/content/drive/")
    clips = uva_nemo.get_config().dataset.builder_kwargs
    assert real["CLIP"] == {key: clips[key] for key in real["CLIP"]}
    assert (real["NUM_MODES"], real["STEPS"], real["OVERRIDES"]) == (None, {}, {})  # the config's own

    batch = defaults(read("batch_sampling"))
    assert batch["WORKDIR"] == quickstart["WORKDIR"] and batch["NUM_MODES"] is None


# ---------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The repository's files as a clone has them (uncommitted changes included), copied."""
    root = str(tmp_path_factory.mktemp("checkout"))
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for path in listed:
        if os.path.isfile(os.path.join(REPO, path)):  # not one deleted in the working tree
            os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, path), os.path.join(root, path))
    return root


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """A kernel spec running this Python (the venv's), whatever specs the machine has."""
    folder = tmp_path_factory.mktemp("kernels")
    os.makedirs(folder / "this_python")
    with open(folder / "this_python" / "kernel.json", "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "this Python", "language": "python"}, f)
    return KernelSpecManager(kernel_dirs=[str(folder)])


def execute(name: str, checkout: str, kernels, parameters: dict):
    """Runs the checkout's notebook top to bottom with `parameters` injected; returns it with outputs."""
    nb = read(name, checkout)
    index = parameters_cell(nb)
    names = {target.id for node in ast.parse(nb.cells[index].source).body for target in node.targets}
    assert set(parameters) <= names, f"{name} has no parameters {sorted(set(parameters) - names)}"
    if parameters:
        source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    kernel = AsyncKernelManager(kernel_name="this_python", kernel_spec_manager=kernels)
    client = NotebookClient(nb, km=kernel, timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": os.path.join(checkout, "notebooks")}})
    start = time.perf_counter()
    client.execute(cleanup_kc=True)  # and shut the kernel down, though the client did not start it
    print(f"{name}: {time.perf_counter() - start:.0f} s; per cell:",
          ", ".join(f"{seconds(cell):.0f}" for cell in nb.cells if cell.cell_type == "code"))
    return nb


def seconds(cell) -> float:
    """How long a cell ran (nbclient's timing metadata)."""
    timing = cell.metadata.execution
    return (datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            - datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()


def check_devices(nb):
    shown = outputs(nb.cells[1])
    assert "backend: cpu" in shown and "devices: [CpuDevice(id=0), CpuDevice(id=1)]" in shown, shown[-2000:]


def check_metrics_table(nb, workdir: str):
    with open(os.path.join(workdir, "eval.json")) as f:
        results = json.load(f)
    [table] = displays(cell_with(nb, "metrics_table(WORKDIR)"), "text/markdown")
    lines = table.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| row |")))
    assert lines[header] == "| row | " + " | ".join(summarize.columns_of([results])) + " |"
    body = lines[header + 2:lines.index("", header)]  # the rows, up to the table of model-only figures
    rows = {line.split("|")[1].strip(): line for line in body}
    assert set(rows) == {"model", *results["baselines"]}, table
    assert f"| {results['conditional_error']:.4g} |" in rows["model"]  # the run's eval.json


def video_shape(path: str) -> tuple[int, ...]:
    assert os.path.getsize(path) > 0, path
    return iio.imread(path).shape


@pytest.fixture(scope="module")
def quickstart(checkout, kernels):
    return execute("quickstart", checkout, kernels, QUICKSTART)


@pytest.mark.notebooks
def test_quickstart(quickstart, checkout):
    nb = quickstart
    check_devices(nb)
    check_metrics_table(nb, os.path.join(checkout, "runs", "smile"))
    # The photo (the astronaut here) is shown, then her K videos: the crop's, then in the photo.
    assert displays(cell_with(nb, "skimage.data.astronaut()"), "image/jpeg")
    sampling = cell_with(nb, "cmm_jax.sample")
    assert "3 posed videos of astronaut.jpg in out" in outputs(sampling)
    videos = displays(sampling, "text/html")
    assert [html.count(VIDEO) for html in videos] == [3, 3]
    for k in range(3):
        assert video_shape(os.path.join(checkout, "out", f"mode_{k}.mp4")) == (16, 256, 256, 3)
        assert video_shape(os.path.join(checkout, "out", f"mode_{k}_photo.mp4"))[0] == 16


@pytest.mark.notebooks
def test_batch_sampling(quickstart, checkout, kernels):
    """Samples the quickstart's run with the notebook's defaults: scikit-image's photos."""
    nb = execute("batch_sampling", checkout, kernels, {})
    check_devices(nb)
    shown = outputs(cell_with(nb, "--image={PHOTOS}"))
    rows = dict(re.findall(r"^(\w+) +(ok|FAILED) ", shown, re.M))
    assert rows == {"astronaut": "ok", "astronaut_mirrored": "ok", "coffee": "FAILED"}, shown[-3000:]
    assert "2 of 3 photos done, 1 failed; outputs in out_batch" in shown
    out = os.path.join(checkout, "out_batch")
    assert sorted(os.listdir(out)) == ["astronaut", "astronaut_mirrored"]
    for name in os.listdir(out):
        for k in range(3):
            assert video_shape(os.path.join(out, name, f"mode_{k}.mp4")) == (16, 256, 256, 3)
    shown = cell_with(nb, "done[:SHOW]")
    assert displays(shown, "text/markdown") == ["### astronaut", "### astronaut_mirrored"]
    assert len(displays(shown, "image/png")) == 2
    assert [html.count(VIDEO) for html in displays(shown, "text/html")] == [3, 3]


@pytest.mark.notebooks
def test_train_real_data(checkout, kernels, tmp_path):
    drive = str(tmp_path / "MyDrive" / "UvA-NEMO")
    subprocess.run([sys.executable, "-m", "cmm_jax.data.fake", "--dataset=uva_nemo", f"--out={drive}", "--subjects=5",
                    "--frames=40"], cwd=checkout, check=True, capture_output=True, timeout=600)
    nb = execute("train_real_data", checkout, kernels, {**REAL_DATA, "MANUAL_DIR": drive})
    check_devices(nb)
    # Subjects 001-005, two classes, one corrupt and one face-less video; 005 is a test subject.
    prepared = outputs(cell_with(nb, "cmm_jax.data.prepare"))
    assert re.search(r"ready in .*: train 8, test 2", prepared), prepared[-3000:]
    assert len(re.findall(r"skipped \w+: cannot decode", prepared)) == 1
    assert len(re.findall(r"skipped \w+: no face in the first frame", prepared)) == 1
    workdir = os.path.join(checkout, "runs", "uva_nemo")
    with open(os.path.join(workdir, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["class_names"] == ["posed", "spontaneous"]
    assert info["frame_size"] == 64 and info["num_frames"] == 8
    # Every stage trained by `cmm_jax.main --config=experiments/uva_nemo.py` (this is
    # the test of that command on UvA-NEMO's layout; tests/test_video_datasets.py runs MUG's).
    for stage in STAGE_ORDER:
        assert os.listdir(os.path.join(workdir, "checkpoints", stage)), stage
    check_metrics_table(nb, workdir)
    # The test faces of each class (K = 2 modes side by side), then the astronaut's 2 videos.
    videos = displays(cell_with(nb, "show_videos(sorted(glob.glob"), "text/html")
    assert [html.count(VIDEO) for html in videos] == [2, 2]
    for name in ("posed", "spontaneous"):
        frames, height, width, _ = video_shape(os.path.join(workdir, "samples", f"input0_{name}.mp4"))
        assert frames == 8 and width == 2 * height  # the 2 modes side by side
