"""The recurrent stage's `jax.lax.scan` against Python loops over the same LSTM.

  python -m benchmarks.recurrent_scan [--config=experiments/smile.py] [--num_frames=32] \
      [--repeats=20] [--json=PATH]

One training step of `ConditionalRecurrent` (cmm_jax/models/recurrent.py) at
the config's sizes (latent vae.latent_dim, hidden recurrent.hidden, noise
recurrent.noise_dim, 2 classes, batch recurrent.batch_size) and with its
recurrent.relative_input (each step reads z_t - z_0; the stage's training
also moves each face by recurrent.face_noise, one noise draw, left out here
as it is no part of the recurrence): forward over T
frames, L2 loss to a random target, gradient, optax adam update. Four ways,
the same parameters and the same LSTM cell:
- scan: the model's own `__call__` (`jax.lax.scan`) inside one `jax.jit`;
- unrolled: a Python for-loop over the T-1 steps inside one `jax.jit`
  (traced T-1 times: a longer compile, then one XLA program);
- python loop: every time step is its own jitted call from Python (the
  eager / PyTorch style); the backward pass chains the steps' `jax.vjp`s
  backwards, one jitted call each, as autograd would. The strongest loop:
  each step is one compiled program, and JAX dispatches it asynchronously;
- no jit: the unrolled Python loop and its gradient run op by op, with no
  `jax.jit` anywhere (what a first JAX program does).
Before timing, the losses and gradients are checked to agree
(`np.testing.assert_allclose`), so the times compare the same computation.
When `import torch` works, also PyTorch at the same sizes (its own
parameters): `nn.LSTMCell` in the same autoregressive Python loop, and the
fused `nn.LSTM` over a given input sequence (not autoregressive: a lower
bound on what this model could cost in PyTorch), on --torch_threads threads
(default 1: on two busy cores, PyTorch's second OpenMP thread made these small
steps 10-25x slower, waiting on the first). Without torch that part is skipped.

Compile time is the first call (tracing + compiling + one step, blocked
on); steady state is the median of --repeats further steps, the ways
interleaved round by round, and each way's ratio to the scan is the median of
the rounds' ratios (with quartiles). Numbers depend
on the machine: they belong in benchmarks/RESULTS.md, never in tests.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from cmm_jax import files
from cmm_jax.configuration import model_option
from cmm_jax.models.recurrent import ConditionalRecurrent

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/smile.py", "Experiment config.")
_FRAMES = flags.DEFINE_integer("num_frames", 32, "Frames per sequence (T).")
_REPEATS = flags.DEFINE_integer("repeats", 30, "Timed rounds (one step of each way); medians are reported.")
_TORCH = flags.DEFINE_boolean("torch", True, "Also time PyTorch when it is installed.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 1, "PyTorch's intra-op threads (0: its default).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here as JSON.")

NUM_CLASSES = 2
LEARNING_RATE = 2e-3


def l2(sequences, target):
    return jnp.mean((sequences - target) ** 2)


def initial_carry(model: ConditionalRecurrent, z0):
    """z0: (B, D) -> ((c, h), z0): the state `ConditionalRecurrent` starts from (no face offset)."""
    return model.initial_carry(z0, jnp.zeros_like(z0))


def cell_step(model: ConditionalRecurrent, carry, condition, noise_t, z0):
    """One time step of `ConditionalRecurrent` (its own `step`, no face
    offset): carry ((c, h), z_prev) -> the next."""
    return model.step(carry, condition, noise_t, z0, jnp.zeros_like(z0))


def loop_forward(model: ConditionalRecurrent, z0, label, noise):
    """`model(z0, label, noise)` with a Python for-loop instead of the scan.

    z0: (B, D); label: (B,); noise: (B, T-1, noise_dim) -> (B, T, D).
    """
    condition = jax.nn.one_hot(label, model.num_classes)
    carry = initial_carry(model, z0)
    sequence = [z0]
    for t in range(noise.shape[1]):
        carry = cell_step(model, carry, condition, noise[:, t], z0)
        sequence.append(carry[1])
    return jnp.stack(sequence, axis=1)


def scan_forward(model: ConditionalRecurrent, z0, label, noise):
    return model(z0, label, noise)


def make_step(forward, graphdef, tx):
    """(params, opt_state, batch) -> (params, opt_state, loss, grads), as plain Python."""

    def step(params, opt_state, batch):
        def loss_fn(p):
            model = nnx.merge(graphdef, p)
            return l2(forward(model, batch["z0"], batch["label"], batch["noise"]), batch["target"])

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    return step


def make_jitted_step(forward, graphdef, tx):
    """`make_step` in one `jax.jit`."""
    return jax.jit(make_step(forward, graphdef, tx))


def make_eager_step(graphdef, tx):
    """The same step with no `jax.jit` at all: `loop_forward` and its gradient
    run op by op from Python, as a first JAX program (or eager PyTorch) does."""
    return make_step(loop_forward, graphdef, tx)


def make_python_loop_step(graphdef, tx):
    """The same step as `make_jitted_step`, one jitted call per time step and
    per backward step (the eager style): forward keeps each step's `jax.vjp`,
    backward runs them in reverse and sums the parameter gradients."""

    @jax.jit
    def start(params, z0):
        return jax.vjp(lambda p: initial_carry(nnx.merge(graphdef, p), z0), params)

    @jax.jit
    def forward(params, carry, condition, noise, t, z0):
        noise_t = noise[:, t]
        return jax.vjp(lambda p, c: cell_step(nnx.merge(graphdef, p), c, condition, noise_t, z0), params, carry)

    @jax.jit
    def loss_and_cotangents(sequence, target):
        return jax.value_and_grad(lambda s: l2(jnp.stack(s, axis=1), target))(sequence)

    @jax.jit
    def backward(pullback, carry_cotangent, z_cotangent, grads):
        lstm_cotangent, z_carried = carry_cotangent
        param_grads, previous = pullback((lstm_cotangent, z_carried + z_cotangent))
        return jax.tree.map(jnp.add, grads, param_grads), previous

    @jax.jit
    def backward_start(pullback, carry_cotangent, grads):
        return jax.tree.map(jnp.add, grads, pullback(carry_cotangent)[0])

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    one_hot = jax.jit(jax.nn.one_hot, static_argnums=1)

    def step(params, opt_state, batch):
        condition = one_hot(batch["label"], NUM_CLASSES)
        carry, start_pullback = start(params, batch["z0"])
        sequence, pullbacks = [carry[1]], []
        for t in range(batch["noise"].shape[1]):
            carry, pullback = forward(params, carry, condition, batch["noise"], t, batch["z0"])
            sequence.append(carry[1])
            pullbacks.append(pullback)
        loss, z_cotangents = loss_and_cotangents(sequence, batch["target"])
        grads = jax.tree.map(jnp.zeros_like, params)
        carry_cotangent = jax.tree.map(jnp.zeros_like, carry)
        for t in reversed(range(len(pullbacks))):
            grads, carry_cotangent = backward(pullbacks[t], carry_cotangent, z_cotangents[t + 1], grads)
        lstm_cotangent, z_carried = carry_cotangent
        grads = backward_start(start_pullback, (lstm_cotangent, z_carried + z_cotangents[0]), grads)
        params, opt_state = update(params, opt_state, grads)
        return params, opt_state, loss, grads

    return step


def build(latent_dim, noise_dim, hidden, seed=0, relative_input=False):
    """-> (graphdef, params) of a fresh `ConditionalRecurrent`."""
    return nnx.split(ConditionalRecurrent(latent_dim, NUM_CLASSES, noise_dim, hidden, relative_input=relative_input,
                                          rngs=nnx.Rngs(seed)))


def random_batch(batch_size, num_frames, latent_dim, noise_dim, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "z0": rng.normal(size=(batch_size, latent_dim)).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
        "noise": rng.normal(size=(batch_size, num_frames - 1, noise_dim)).astype(np.float32),
        "target": rng.normal(size=(batch_size, num_frames, latent_dim)).astype(np.float32),
    }


def jax_steps(graphdef, tx):
    """name -> train step, every way."""
    return {
        "scan (jit)": make_jitted_step(scan_forward, graphdef, tx),
        "unrolled Python loop inside jit": make_jitted_step(loop_forward, graphdef, tx),
        "Python loop of jitted steps": make_python_loop_step(graphdef, tx),
        "Python loop, no jit (op by op)": make_eager_step(graphdef, tx),
    }


def check_same(steps, params, opt_state, batch, rtol=1e-4, atol=1e-5):
    """Asserts every step gives the first one's loss and gradients; -> largest gradient difference."""
    results = {name: step(params, opt_state, batch) for name, step in steps.items()}
    (_, _, loss, grads), *others = results.values()
    largest = 0.0
    for _, _, other_loss, other_grads in others:
        np.testing.assert_allclose(other_loss, loss, rtol=rtol)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(other_grads)):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
            largest = max(largest, float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
    return largest


def _time(step, state, repeats, block):
    """-> (first call seconds, median of `repeats` steady steps in seconds)."""
    start = time.perf_counter()
    state = step(*state)
    block(state)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = step(*state)
        block(state)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def time_jax(steps, params, opt_state, batch, repeats):
    """Each way's first call, then `repeats` rounds that time one step of every
    way in turn (interleaved, so a slow spell of a shared machine falls on all
    of them, not on whichever ran then). -> {name: {compile_s, step_ms, ratio}}:
    ratio is the median over rounds of the step's time over the scan's in the
    same round, with its quartiles."""
    states, rows, times = {}, {}, {name: [] for name in steps}
    for name, step in steps.items():
        start = time.perf_counter()
        states[name] = jax.block_until_ready(step(params, opt_state, batch)[:2])
        rows[name] = {"compile_s": time.perf_counter() - start}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            states[name] = jax.block_until_ready(step(*states[name], batch)[:2])
            times[name].append(time.perf_counter() - start)
    scan = np.array(times["scan (jit)"])
    for name, row in rows.items():
        ratios = np.array(times[name]) / scan
        row.update(step_ms=1e3 * statistics.median(times[name]), ratio=float(np.median(ratios)),
                   ratio_quartiles=[float(q) for q in np.quantile(ratios, [0.25, 0.75])])
    return rows


def time_torch(batch_size, num_frames, latent_dim, noise_dim, hidden, repeats, threads=1):
    """PyTorch at the same sizes, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    features = latent_dim + NUM_CLASSES + noise_dim
    batch = {k: torch.from_numpy(v) for k, v in random_batch(batch_size, num_frames, latent_dim, noise_dim).items()}
    init_state = torch.nn.Linear(latent_dim, 2 * hidden)
    cell = torch.nn.LSTMCell(features, hidden)
    to_delta = torch.nn.Linear(hidden, latent_dim)
    modules = torch.nn.ModuleList([init_state, cell, to_delta])
    optimizer = torch.optim.Adam(modules.parameters(), lr=LEARNING_RATE)
    condition = torch.nn.functional.one_hot(batch["label"].long(), NUM_CLASSES).float()

    def cell_loop():
        c, h = torch.tanh(init_state(batch["z0"])).chunk(2, dim=-1)
        z, sequence = batch["z0"], [batch["z0"]]
        for t in range(num_frames - 1):
            h, c = cell(torch.cat([z, condition, batch["noise"][:, t]], dim=-1), (h, c))
            z = z + to_delta(h)
            sequence.append(z)
        loss = torch.mean((torch.stack(sequence, dim=1) - batch["target"]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    lstm = torch.nn.LSTM(features, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, latent_dim)
    fused_optimizer = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=LEARNING_RATE)
    inputs = torch.randn(batch_size, num_frames - 1, features)

    def fused():
        outputs, _ = lstm(inputs)
        loss = torch.mean((head(outputs) - batch["target"][:, 1:]) ** 2)
        fused_optimizer.zero_grad()
        loss.backward()
        fused_optimizer.step()

    rows = {}
    for name, fn in (("torch nn.LSTMCell, Python loop", cell_loop),
                     ("torch nn.LSTM fused (not autoregressive)", fused)):
        first, steady = _time(lambda: (fn(), ())[1], (), repeats, lambda _: None)
        rows[name] = {"compile_s": first, "step_ms": 1e3 * steady}
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}


def main(argv):
    del argv
    config = _CONFIG.value
    latent, noise_dim, hidden = config.vae.latent_dim, config.recurrent.noise_dim, config.recurrent.hidden
    batch_size, num_frames = config.recurrent.batch_size, _FRAMES.value
    relative = model_option(config, "recurrent", "relative_input")
    graphdef, params = build(latent, noise_dim, hidden, relative_input=relative)
    tx = optax.adam(LEARNING_RATE)
    opt_state = tx.init(params)
    batch = jax.device_put(random_batch(batch_size, num_frames, latent, noise_dim))
    steps = jax_steps(graphdef, tx)
    rows = time_jax(steps, params, opt_state, batch, _REPEATS.value)  # first: the first call compiles
    largest = check_same(steps, params, opt_state, batch)
    torch_result = (time_torch(batch_size, num_frames, latent, noise_dim, hidden, _REPEATS.value, _TORCH_THREADS.value)
                    if _TORCH.value else None)
    result = {
        "sizes": {"batch": batch_size, "frames": num_frames, "latent": latent, "hidden": hidden,
                  "noise": noise_dim, "classes": NUM_CLASSES},
        "relative_input": relative,
        "repeats": _REPEATS.value,
        "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}",
        "max_grad_difference": largest,
        "rows": rows,
        "torch": torch_result,
    }
    scan_ms = rows["scan (jit)"]["step_ms"]
    print(f"ConditionalRecurrent train step (forward, L2, grad, adam): batch {batch_size}, T = {num_frames}, "
          f"latent {latent}, hidden {hidden}, noise {noise_dim}, relative_input={relative}; {result['device']}")
    print(f"losses and gradients agree (largest gradient difference {largest:.2e})")
    print(f"  {'':<44} {'compile s':>10} {'step ms':>9} {'vs scan':>8}  (quartiles over rounds)")
    all_rows = dict(rows, **(torch_result["rows"] if torch_result else {}))
    for name, row in all_rows.items():
        ratio = row.get("ratio", row["step_ms"] / scan_ms)
        spread = "  ({:.2f}-{:.2f})".format(*row["ratio_quartiles"]) if "ratio_quartiles" in row else ""
        print(f"  {name:<44} {row['compile_s']:>10.2f} {row['step_ms']:>9.2f} {ratio:>7.2f}x{spread}")
    if torch_result:
        print(f"  (torch {torch_result['version']}, {torch_result['threads']} threads)")
    else:
        print("  PyTorch: skipped" + ("" if not _TORCH.value else " (import torch failed: not installed)"))
    if _JSON.value:
        files.write_json(_JSON.value, result, indent=1)


if __name__ == "__main__":
    app.run(main)
