"""One mesh for the whole program: a `data` axis over every device.

Batches are sharded along it, parameters and optimiser state are replicated,
and `jax.jit` inserts the gradient all-reduce — the semantics of the paper-era
`pmap`, written the current way. Multi-host (`cmm_jax.distributed`): the mesh
spans every process's devices, every process passes its own slice of the
batch and `make_array_from_process_local_data` assembles it; what runs outside
training (evaluation, sampling) runs in each process on its own devices
(`local_mesh`, `process_local`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A `data` mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def local_mesh() -> Mesh:
    """The mesh of this process's devices: `make_mesh()` in a one-process run."""
    return make_mesh(jax.local_devices())


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


def process_local(tree, mesh: Mesh):
    """Arrays replicated over other processes' devices too -> the same values
    replicated over `mesh` (this process's devices), so that this process can
    compute with them alone; arrays this process holds whole are left as they are."""
    def local(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if not x.is_fully_replicated:
            raise ValueError(f"an array of shape {x.shape} is split over processes, not replicated: {x.sharding}")
        return jax.device_put(x.addressable_data(0), replicated(mesh))

    return jax.tree.map(local, tree)
