"""Where a run's time goes: wall-clock seconds per phase, in the order run.

    with timing.phase("vae"):          # a whole phase
        ...
    timing.record("vae/first_step", s)  # a part of one, measured by its owner

`cmm_jax.main` writes the phases to the run's timings.json
(`run_dir.timings_path`) and prints them; BUILD.md "Where command 1's time
goes" reads them. The clock is `time.perf_counter`; nothing here touches JAX,
so a phase that dispatches asynchronous work should end on a result it has
waited for (a training stage ends on its checkpoint, evaluation on its files).
"""

from __future__ import annotations

import contextlib
import time

_PHASES: dict[str, float] = {}


def reset() -> None:
    _PHASES.clear()


def record(name: str, seconds: float) -> None:
    """Adds `seconds` to phase `name` (a phase run twice accumulates)."""
    _PHASES[name] = _PHASES.get(name, 0.0) + float(seconds)


@contextlib.contextmanager
def phase(name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, time.perf_counter() - start)


def phases() -> dict[str, float]:
    """The phases so far, in seconds, rounded to 0.1 s, in the order first recorded."""
    return {name: round(seconds, 1) for name, seconds in _PHASES.items()}


def summary() -> str:
    """One line: the top-level phases (names without '/') and their total."""
    top = {k: v for k, v in phases().items() if "/" not in k}
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in top.items())
    return f"time: {parts}; total {sum(top.values()):.0f} s"
