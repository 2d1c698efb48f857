"""The recurrent benchmark's Python loops compute what the model's scan does."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks import recurrent_scan


@pytest.mark.parametrize("relative_input", [False, True])
def test_loop_forward_matches_the_scan(relative_input):
    graphdef, params = recurrent_scan.build(latent_dim=4, noise_dim=2, hidden=8, relative_input=relative_input)
    batch = recurrent_scan.random_batch(batch_size=3, num_frames=5, latent_dim=4, noise_dim=2)
    model = nnx.merge(graphdef, params)
    scanned = model(batch["z0"], batch["label"], batch["noise"])
    looped = recurrent_scan.loop_forward(model, batch["z0"], batch["label"], batch["noise"])
    assert scanned.shape == (3, 5, 4)
    np.testing.assert_allclose(looped, scanned, rtol=1e-5, atol=1e-6)


def test_train_steps_give_the_same_loss_gradients_and_update():
    # relative_input, as experiments/smile.py trains the stage.
    graphdef, params = recurrent_scan.build(latent_dim=4, noise_dim=2, hidden=8, relative_input=True)
    batch = recurrent_scan.random_batch(batch_size=3, num_frames=5, latent_dim=4, noise_dim=2)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    steps = recurrent_scan.jax_steps(graphdef, tx)
    assert len(steps) == 4
    recurrent_scan.check_same(steps, params, opt_state, batch)
    updated = [step(params, opt_state, batch)[0] for step in steps.values()]
    for other in updated[1:]:
        for a, b in zip(jax.tree.leaves(updated[0]), jax.tree.leaves(other)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # The gradient is not zero everywhere, so agreeing means something.
    grads = steps["scan (jit)"](params, opt_state, batch)[3]
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads))
