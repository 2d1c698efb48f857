"""The training loop: every stage of CMM-Net in order.

One loop serves all stages (`cmm_jax.stages`): a pure `train_step(state,
frozen, batch)` jit-compiled over a one-axis data mesh, grain batches, Orbax
checkpoints with the iterator position, JSON-lines/TensorBoard metrics and a
progress bar. A stage whose final checkpoint exists is not trained again, and
one killed midway resumes from its last save.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from cmm_jax import configuration, distributed, inference, input_check, run_dir, sharding, timing
from cmm_jax.checkpoint import Checkpointer
from cmm_jax.configuration import STAGE_ORDER
from cmm_jax.data import pipeline
from cmm_jax.errors import UserError
from cmm_jax.metric_writer import MetricWriter, announce
from cmm_jax.stages import STAGES


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # nnx.State of the stage's model
    opt_state: Any
    rng: jax.Array  # raw uint32 key, split once per step


def make_optimizer(stage_config) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=stage_config.learning_rate,
        warmup_steps=min(100, stage_config.steps // 10),
        decay_steps=stage_config.steps,
        end_value=stage_config.learning_rate * 0.05,
    )
    # GAN stages train with b1 = 0.5 (pix2pix, DCGAN); the others with Adam's default.
    b1, weight_decay = stage_config.get("b1", 0.9), stage_config.get("weight_decay", 0.0)
    adam = optax.adamw(schedule, b1=b1, weight_decay=weight_decay) if weight_decay else optax.adam(schedule, b1=b1)
    return optax.chain(optax.clip_by_global_norm(1.0), adam)


def stage_seed(config, name: str) -> int:
    return config.seed * 100 + STAGE_ORDER.index(name)


def _build_state(name: str, config, info: pipeline.DatasetInfo, tx) -> TrainState:
    params = nnx.state(STAGES[name].build(config, info, nnx.Rngs(stage_seed(config, name))))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(stage_seed(config, name)),
    )


def fresh_state(name: str, config, info: pipeline.DatasetInfo, tx) -> TrainState:
    """Stage `name`'s initial TrainState, made by one compiled program.

    Built op by op, each initialiser's random numbers were programs of their
    own: 158 small compilations for the six stages of experiments/smile.py,
    29-31 s with an empty compilation cache on the 2-core CPU, against 22-26 s
    for one program per stage. The parameters are the same bits either way."""
    return jax.jit(functools.partial(_build_state, name, config, info, tx))()


def init_state(name: str, config, info: pipeline.DatasetInfo):
    """-> (graphdef, TrainState, optimizer) for a fresh model of stage `name`."""
    tx = make_optimizer(config[name])
    return nnx.graphdef(STAGES[name].abstract(config, info)), fresh_state(name, config, info, tx), tx


def _abstract_state(name, config, info, mesh):
    state = jax.eval_shape(functools.partial(_build_state, name, config, info, make_optimizer(config[name])))
    replicated = sharding.replicated(mesh)
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
    )


def train_step(state: TrainState, frozen_states, batch, *, graphdef, frozen_graphdefs, tx, loss_fn, config):
    """One optimiser step: a pure function of (state, frozen params, batch)."""
    rng, step_rng = jax.random.split(state.rng)
    frozen = {k: nnx.merge(frozen_graphdefs[k], v) for k, v in frozen_states.items()}

    def compute_loss(params):
        return loss_fn(nnx.merge(graphdef, params), frozen, batch, step_rng, config)

    (_, metrics), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    new_state = TrainState(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        rng=rng,
    )
    return new_state, metrics


def make_train_step(name, config, graphdef, frozen_models, tx, mesh):
    frozen_graphdefs = {k: nnx.graphdef(m) for k, m in frozen_models.items()}
    step = functools.partial(
        train_step,
        graphdef=graphdef,
        frozen_graphdefs=frozen_graphdefs,
        tx=tx,
        loss_fn=STAGES[name].loss,
        config=config,
    )
    replicated = sharding.replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(replicated, replicated, sharding.batch_sharded(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


def train_stage(name, config, info, source, workdir, mesh, frozen_models, writer):
    """Trains (or resumes) one stage and returns its trained model."""
    stage_config = config[name]
    graphdef, tx = nnx.graphdef(STAGES[name].abstract(config, info)), make_optimizer(stage_config)
    process_count = jax.process_count()
    iterator = pipeline.train_iterator(
        source,
        stage_config.batch_size // process_count,
        seed=stage_seed(config, name),
        process_index=jax.process_index(),
        process_count=process_count,
    )
    checkpointer = Checkpointer(run_dir.checkpoint_dir(workdir, name))
    latest = checkpointer.latest_step()
    if latest is not None:
        state, data_state = checkpointer.restore(_abstract_state(name, config, info, mesh))
        iterator.set_state(data_state)
        announce(f"{name}: resumed from step {latest}")
    else:
        state = sharding.replicate(fresh_state(name, config, info, tx), mesh)
    # Lines past the restored step came from a run that did not finish.
    writer.forget_after(name, latest or 0)

    start, total = int(state.step), stage_config.steps
    if start < total:
        step_fn = make_train_step(name, config, graphdef, frozen_models, tx, mesh)
        frozen_states = sharding.replicate(
            {k: nnx.state(m) for k, m in frozen_models.items()}, mesh
        )
        pending = []
        began = time.perf_counter()
        step = start
        try:
            with tqdm(
                total=total, initial=start, desc=f"{name:>10}", unit="step",
                disable=jax.process_index() != 0, dynamic_ncols=True,
            ) as bar:
                for step in range(start, total):
                    batch = sharding.shard_batch(next(iterator), mesh)
                    state, metrics = step_fn(state, frozen_states, batch)
                    pending.append(metrics)
                    done = step + 1
                    if step == start:  # tracing, compiling and one step
                        jax.block_until_ready(metrics)
                        timing.record(f"{name}/first_step", time.perf_counter() - began)
                    if done % config.log_every == 0 or done == total:
                        averaged = jax.tree.map(lambda *x: float(np.mean(x)), *jax.device_get(pending))
                        pending = []
                        writer.write(name, done, averaged)
                        bar.set_postfix(loss=f"{averaged['loss']:.4g}")
                    if done % config.checkpoint_every == 0 or done == total:
                        checkpointer.save(done, state, iterator.get_state())
                    bar.update(1)
        except KeyboardInterrupt:
            checkpointer.wait()  # a save in flight is finished, so the step named here is whole
            saved = checkpointer.latest_step()
            announce(f"{name}: interrupted at step {step + 1} of {total}; " + (
                f"its last checkpoint is step {saved}: the same command continues from there" if saved
                else "it has no checkpoint yet: the same command starts it again"))
            raise
    checkpointer.wait()
    checkpointer.close()
    return nnx.merge(graphdef, state.params)


def process_local_model(model: nnx.Module, mesh) -> nnx.Module:
    """`model` with its parameters on this process's devices (`sharding.process_local`)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, sharding.process_local(state, mesh))


def train(config, workdir: str):
    """Trains the configured stages in order (the others are loaded) and
    measures the neutral training faces' range; -> (builder, trained models).

    In a multi-process run every process trains on the mesh of all devices;
    the models it returns are on its own devices, and what follows training
    (residual bank, input range) each process computes alone, the same numbers
    in every process; only process 0 writes files."""
    stages = configuration.validate(config, workdir)
    with timing.phase("data"):
        builder = distributed.primary_first(lambda: pipeline.load_builder(config.dataset))
    info = pipeline.dataset_info(builder)
    if "translator" in stages and info.frame_size and info.frame_size != config.translator.image_size:
        raise UserError(
            f"translator.image_size={config.translator.image_size} but the dataset's frames are "
            f"{info.frame_size}x{info.frame_size}; set both to one size"
        )
    # config.json is the config the run's stages were trained with, which
    # sampling and later runs' `load_from` read: a run that trains no stage
    # here (evaluation only, e.g. at another multimode.spread) leaves it as it is.
    if jax.process_index() == 0 and (stages or not os.path.exists(run_dir.config_path(workdir))):
        run_dir.write_config(workdir, config, info)
    mesh = sharding.make_mesh()
    announce(f"data-parallel over {mesh.size} device(s) in {jax.process_count()} process(es)")
    source = builder.as_data_source("train")
    writer = MetricWriter(run_dir.metrics_path(workdir), run_dir.tensorboard_dir(workdir))
    models: dict[str, nnx.Module] = {}

    def model(name, mesh):
        if name not in models:
            models[name] = run_dir.load_model(name, config, info, workdir, mesh)
        return models[name]

    try:
        for name in STAGE_ORDER:
            if name in stages:
                frozen = {k: model(k, mesh) for k in STAGES[name].requires}
                if STAGES[name].extras:
                    frozen.update(STAGES[name].extras(config, source))
                with timing.phase(name):
                    models[name] = train_stage(name, config, info, source, workdir, mesh, frozen, writer)
    finally:
        writer.close()

    local = sharding.local_mesh()
    models = {k: process_local_model(m, local) for k, m in models.items()}
    train_split = pipeline.load_split(source)
    with timing.phase("residual_bank_and_input_range"):
        if "multimode" in stages:
            # What the K prototypes leave out, drawn back at multimode.spread > 0.
            prototypes = inference.prototypes_for_inputs(
                {k: model(k, local) for k in ("vae", "recurrent", "multimode")}, train_split["landmarks"][:, 0],
                info.num_classes, info.num_frames, config, seed=config.seed)
            models["residuals"] = inference.ResidualBank.fit(
                prototypes, train_split["reference"], train_split["label"], config.multimode.residual_bank,
                np.random.default_rng(config.seed))
            if jax.process_index() == 0:
                run_dir.write_residuals(workdir, models["residuals"])
        # The neutral training faces' range that sampling checks photos against (cmm_jax.input_check).
        try:
            stats = input_check.neutral_range(model("vae", local), train_split["landmarks"][:, 0])
        except UserError:  # no VAE trained or loadable: sampling runs without the check
            stats = None
        if stats is not None and jax.process_index() == 0:
            run_dir.write_input_range(workdir, stats)
    return builder, models
