"""One mesh for the whole program: a `data` axis over every device.

Batches are sharded along it, parameters and optimiser state are replicated,
and `jax.jit` inserts the gradient all-reduce — the semantics of the paper-era
`pmap`, written the current way. Multi-host: every process passes its own
slice of the batch and `make_array_from_process_local_data` assembles it.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(local_batch, mesh: Mesh):
    """A dict of this process's numpy arrays -> global arrays split over `data`."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
        local_batch,
    )


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
