"""The default experiment: CMM-Net on the embedded synthetic smiles.

Trains every stage on a 2-core CPU in minutes. Override anything from the
command line, e.g. --config.num_modes=1 or --config.stages=multimode.
"""

import ml_collections

from cmm_jax import configuration


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Stages to train, in this order; the others are loaded from the workdir.
    config.stages = ",".join(configuration.STAGE_ORDER)
    # A finished run to take the stages not trained here from (e.g. ablations
    # of the multi-mode stage reuse one VAE, classifier and recurrent net).
    config.load_from = ""
    config.num_modes = 5  # K
    config.log_every = 50
    config.checkpoint_every = 500
    config.evaluate = True

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "smile_synth"
    config.dataset.data_dir = "data/tfds"
    # Passed to the builder (datasets/smile_synth): sizes, frames, noise, seed.
    config.dataset.builder_kwargs = ml_collections.ConfigDict()

    config.vae = ml_collections.ConfigDict()
    config.vae.latent_dim = 32
    config.vae.hidden = 256
    config.vae.beta = 1e-4
    config.vae.steps = 1500
    config.vae.batch_size = 32  # sequences, i.e. 32 x T frames
    config.vae.learning_rate = 2e-3

    config.classifier = ml_collections.ConfigDict()
    config.classifier.hidden = 64
    config.classifier.features = 64
    config.classifier.steps = 800
    config.classifier.batch_size = 64
    config.classifier.learning_rate = 2e-3

    # The judge scores generated sequences in `evaluate` and is in no loss:
    # another architecture (bidirectional GRU) and seed than the classifier.
    config.judge = ml_collections.ConfigDict()
    # Regularised (chosen on validation: class accuracy 0.77 -> 0.82).
    config.judge.hidden = 32
    config.judge.features = 32
    config.judge.steps = 1500
    config.judge.batch_size = 64
    config.judge.learning_rate = 2e-3
    config.judge.weight_decay = 1e-2
    config.judge.input_noise = 0.01  # [-1, 1] units: ~0.012 inter-ocular distances

    config.recurrent = ml_collections.ConfigDict()
    config.recurrent.hidden = 128
    config.recurrent.noise_dim = 8
    config.recurrent.num_samples = 4  # best-of-M noise draws (1: plain L2)
    config.recurrent.steps = 1500
    config.recurrent.batch_size = 64
    config.recurrent.learning_rate = 2e-3
    # Each step reads the embedding's change from the face's (True) or the
    # embedding itself (False, rounds 1-4). Round 5 (BUILD.md) chose True.
    config.recurrent.relative_input = True
    # In training, the net reads each face moved by noise of this many times
    # the batch's spread of faces (per latent dimension); 0: the face as it is
    # (rounds 1-4). Round 5 chose 0.5.
    config.recurrent.face_noise = 0.5

    config.multimode = ml_collections.ConfigDict()
    config.multimode.hidden = 64
    # The mode decoders read the embedding sequence's change from the face's
    # embedding only (True, round 5), or the sequence itself too (False,
    # rounds 1-4): the face reaches them through its landmarks.
    config.multimode.motion_only = True
    config.multimode.steps = 2000
    config.multimode.batch_size = 64
    config.multimode.learning_rate = 2e-3
    # How real sequences are assigned to modes: "balanced" (winner-takes-all
    # with equal mode capacity), "wta" (plain, relaxed) or "mean" (every mode
    # fits every sequence: the no-diversity ablation, with mode_id_weight=0).
    config.multimode.assignment = "balanced"
    config.multimode.assignment_temperature = 0.01  # relative to the mean error
    config.multimode.wta_relaxation = 0.02
    # What the mode decoders train on: "random" (a draw of the recurrent net
    # at `temperature`, as generation gives them), "posterior" (noise inferred
    # from the real sequence, KL towards the prior) or "matched" (the draw
    # closest to the real sequence) - configuration.TRAIN_TIMINGS.
    # Chosen on validation (BUILD.md "Protocol", rounds 2 and 3): "random" at
    # temperature 0, without mode identification or class term. The recurrent
    # net then gives the face's noise-free unroll and the K decoders are a
    # conditional k-means of the class's smiles for this face: the lowest
    # conditional error (0.0155 against 0.0158-0.0190).
    config.multimode.train_timing = "random"
    config.multimode.kl_weight = 1e-4  # train_timing="posterior" only
    # A per-sequence variation latent for the mode decoders (0: none), inferred
    # from the real sequence in training, N(0, I) at generation; its KL weight.
    config.multimode.variation_dim = 0
    config.multimode.variation_kl_weight = 1e-5
    # Generate: each mode decodes its own draw of the recurrent net (its own
    # timing) rather than all K sharing one, as in the paper.
    config.multimode.per_mode_timing = True
    # The recurrent net's noise scale at generation (and in training with
    # "random"): 1 samples its learnt law, 0 its noise-free unroll.
    config.multimode.temperature = 0.0
    # The K outputs: 0 = each mode's prototype (the decoders' output); 1 = one
    # draw of the training smiles around it (the prototype plus the residual of
    # a training clip of that mode, inference.ResidualBank); in between, scaled.
    # Prototypes give the lowest conditional error, draws the data's spread
    # (landmark FD): BUILD.md "Prototypes or draws". residual_bank: residuals
    # kept per (class, mode), in the run's residuals.npz.
    config.multimode.spread = 0.0
    config.multimode.residual_bank = 64
    # Weights of the mode-identification (MAD-GAN) and class-consistency (the
    # loss classifier on generated sequences) terms; both off by default.
    config.multimode.mode_id_weight = 0.0
    config.multimode.class_weight = 0.0

    # Landmarks + neutral face -> frames (U-Net + PatchGAN).
    config.translator = ml_collections.ConfigDict()
    # Sizes for a 2-core CPU: a step at batch 32 of 64x64 pairs takes 0.29 s
    # (features=32, disc_features=32: 0.42 s), and on warped-face pairs 24
    # features reached a lower held-out L1 than 16 (0.023 against 0.026).
    config.translator.features = 24  # generator channels at 1/2 resolution, x2 per level
    config.translator.num_levels = 4  # generator downsamplings: 64x64 -> 4x4
    config.translator.disc_features = 16
    # pix2pix's ratio of L1 to adversarial weight. At 10 the discriminator,
    # which memorises a small training set quickly, pulled the generator away
    # from the targets (L1 rose on a fixed problem); at 100 the adversarial
    # term refines what L1 places.
    config.translator.l1_weight = 100.0
    config.translator.part_l1_weight = 4.0  # extra L1 weight on the eyes and lips (1 + this at a point)
    config.translator.adversarial_weight = 1.0
    config.translator.feature_matching_weight = 1.0
    config.translator.frames_per_clip = 2  # target frames drawn from each clip per step
    # It starts as the warp and on smile_synth can only learn the warp (BUILD.md):
    # a short stage shows that it trains, saves and renders.
    config.translator.steps = 300
    # Sized for a CPU: 8 clips x 2 target frames = 16 pairs per step, ~0.2 s
    # (pix2pix trains with batch 1; 32 pairs took 0.36 s a step, 40 % of README
    # command 1's training time on data where the translator can only learn the warp).
    config.translator.batch_size = 8  # clips; each gives frames_per_clip (neutral, frame t) pairs
    config.translator.learning_rate = 5e-4
    config.translator.image_size = 64
    # What the U-Net and PatchGAN compute in: "bfloat16" on GPUs/TPUs with bf16
    # matrix units (parameters stay float32, so checkpoints serve both); on a CPU
    # float32 is faster (benchmarks/RESULTS.md).
    config.translator.dtype = "float32"
    # smile_synth has no frames: its people get faces from these photos
    # (comma-separated paths; "" = scikit-image's astronaut), augmented
    # (cmm_jax/data/face_bank.py).
    config.translator.photos = ""
    config.translator.bank_size = 256
    config.translator.b1 = 0.5

    config.eval = ml_collections.ConfigDict()
    # "test" for the numbers reported once; "validation" for every choice
    # (writes eval_validation.json instead of eval.json).
    config.eval.split = "test"
    config.eval.tag = ""  # names a variant's file: eval_<split>_<tag>.json
    config.eval.max_inputs = 0  # 0: every test sequence's first frame
    config.eval.num_sample_inputs = 3
    config.eval.fps = 8
    # Also measure the run's sample videos (the astronaut, every renderer) with
    # dlib and add the figures to eval.json as "render" (`video_metrics`: render
    # fidelity, re-detection, identity, jumps): about 30 s per renderer on two
    # CPU cores, so off here to keep README command 1 under 10 minutes.
    config.eval.render_metrics = False
    return config
