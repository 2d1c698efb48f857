"""Many processes, one run: `jax.distributed` from command-line flags.

A multi-host run (a TPU pod slice, several GPU hosts, one process per GPU)
starts one process per host or GPU, and each must join the others before JAX
touches a backend; after that `jax.devices()` lists every process's devices
and the mesh (`sharding.make_mesh`) spans them all. Without any of the flags
below nothing happens: a run is the usual single process.

  --distributed                    JAX detects the cluster itself (Cloud TPU,
                                   SLURM, Open MPI, Kubernetes)
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                                   an explicit cluster (process 0 listens on PORT)

On CPU the processes' collectives go over gloo, JAX's default CPU
implementation (`jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import jax
from absl import flags
from jax.experimental import multihost_utils

from cmm_jax.errors import UserError

_EXPLICIT = ("--coordinator_address", "--num_processes", "--process_id")


def define_flags() -> None:
    """Defines --distributed, --coordinator_address, --num_processes, --process_id (absl)."""
    flags.DEFINE_bool("distributed", False, "Join a multi-process run whose coordinator, process count and "
                      "index JAX detects from the environment (Cloud TPU, SLURM, Open MPI, Kubernetes).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 in a multi-process run.")
    flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run, 0 to num_processes - 1.")


def _check(coordinator_address: str | None, num_processes: int | None, process_id: int | None,
          detect: bool) -> None:
    """UserError when the flags do not describe a cluster JAX can join."""
    given = [name for name, value in zip(_EXPLICIT, (coordinator_address, num_processes, process_id))
             if value is not None]
    if given and not detect and len(given) < len(_EXPLICIT):
        missing = [name for name in _EXPLICIT if name not in given]
        raise UserError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} {' and '.join(missing)} too "
                        f"(or --distributed to detect the rest from the cluster)")
    if process_id is not None and num_processes is None:
        raise UserError("--process_id needs --num_processes")
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num_processes must be >= 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise UserError(f"--process_id must be in 0..{num_processes - 1} (--num_processes={num_processes}), "
                        f"got {process_id}")
    if coordinator_address is not None:
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--coordinator_address must be host:port, got {coordinator_address!r}")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, detect: bool = False) -> bool:
    """Joins the other processes of the run (`jax.distributed.initialize`) when
    any argument asks for it; must run before anything touches a JAX backend.
    Returns whether it joined."""
    _check(coordinator_address, num_processes, process_id, detect)
    if not detect and coordinator_address is None:
        return False
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True


def initialize_from_flags() -> bool:
    """`initialize` with the flags of `define_flags`."""
    values = flags.FLAGS
    return initialize(values.coordinator_address, values.num_processes, values.process_id, values.distributed)


def primary_first(fn):
    """fn() on process 0, then on every other process once process 0 has
    finished (preparing a dataset on a shared disk once); -> its result."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("cmm_jax.primary_first")
    return result if jax.process_index() == 0 else fn()
