"""benchmarks/run_all.py writes RESULTS.md from a real (tiny) run."""

import re
import subprocess
import sys

from cmm_jax.configuration import STAGE_ORDER
from conftest import REPO


def test_run_all_writes_the_results_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    command = [sys.executable, "-m", "benchmarks.run_all", "--quick", "--only=recurrent_scan", f"--out={out}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for line in ("# Benchmark results", "- command: `python -m benchmarks.run_all --quick",
                 "**--quick: tiny settings", "- CPU: ", "- devices: ", "jax 0.", "flax ", "HISTORY.md"):
        assert line in text, line
    sections = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert len(sections) == 5, sections
    assert sections[0].startswith("Recurrent stage")
    assert text.count("Not run (--only).") == 4
    # The recurrent section: four timed ways, each a compile time, a step time and a ratio with its quartiles.
    for way in ("scan (jit)", "unrolled Python loop inside jit", "Python loop of jitted steps",
                "Python loop, no jit (op by op)"):
        row = re.search(rf"^\| {re.escape(way)} \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \(([\d.]+)-([\d.]+)\) \|$",
                        text, re.MULTILINE)
        assert row, way
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0
        assert float(row.group(4)) <= float(row.group(3)) <= float(row.group(5))
    assert "| scan (jit) |" in text and "1.00x (1.00-1.00) |" in text
    assert "same loss and gradients" in text
    assert "**Ratios in this run:**" in text


def test_run_all_names_every_stage_in_training_order():
    """Read from the file: importing it would define its absl flags in this process (--out, as others do)."""
    with open(f"{REPO}/benchmarks/run_all.py") as f:
        stages = re.search(r'^STAGES = "([^"]+)"$', f.read(), re.MULTILINE).group(1)
    assert tuple(stages.split(",")) == STAGE_ORDER
