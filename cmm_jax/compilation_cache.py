"""JAX's persistent compilation cache for the command-line entry points.

A training step, the sampler's renderer and the evaluation's networks are
compiled once per shape; with the cache on, XLA's compiled programs are kept
on disk and a later run with the same shapes and versions loads them instead
of compiling again (benchmarks/compile_cache.py measures the saving: 81-90 %
of a stage's first-step time on the 2-core CPU). Tracing still happens.

  --compilation_cache=DIR   where (default ~/.cache/cmm_jax/xla); "" turns it off

JAX_COMPILATION_CACHE_DIR in the environment wins over the flag.
"""

from __future__ import annotations

import os

import jax
from absl import flags

DEFAULT_DIR = os.path.join("~", ".cache", "cmm_jax", "xla")


def define_flags() -> None:
    flags.DEFINE_string("compilation_cache", DEFAULT_DIR,
                        "Folder of JAX's persistent compilation cache (compiled steps reused by later runs); "
                        "'' turns it off. JAX_COMPILATION_CACHE_DIR wins.")


def enable(directory: str) -> str | None:
    """Turns the cache on in `directory` (unless JAX_COMPILATION_CACHE_DIR
    already chose one); every program is kept, however fast it compiled.
    Returns the folder in use, or None when off. Call before compiling."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        directory = os.environ["JAX_COMPILATION_CACHE_DIR"]  # JAX has read it already
    elif not directory:
        return None
    else:
        directory = os.path.expanduser(directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            return None  # an unwritable home: run without the cache rather than fail
        jax.config.update("jax_compilation_cache_dir", directory)
    # Kept whichever way the folder was chosen: JAX's default keeps only
    # programs that took over a second to compile, and a run's many small
    # ones (evaluation, sampling) add up to more.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def enable_from_flags() -> str | None:
    return enable(flags.FLAGS.compilation_cache)
