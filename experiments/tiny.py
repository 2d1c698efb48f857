"""A tiny config for tests: the real code path in seconds."""

from cmm_jax.configuration import STAGE_ORDER
from experiments import smile


def get_config():
    config = smile.get_config()
    config.num_modes = 3
    config.log_every = 5
    config.checkpoint_every = 10
    config.dataset.builder_kwargs.num_train_subjects = 12
    config.dataset.builder_kwargs.num_validation_subjects = 4
    config.dataset.builder_kwargs.num_test_subjects = 6
    config.dataset.builder_kwargs.clips_per_class = 2
    config.dataset.builder_kwargs.num_frames = 16
    for stage in STAGE_ORDER:
        config[stage].steps = 20
        config[stage].batch_size = 8
    config.vae.latent_dim = 8
    config.vae.hidden = 32
    config.classifier.hidden = 16
    config.classifier.features = 16
    config.judge.hidden = 16
    config.judge.features = 16
    config.recurrent.hidden = 16
    config.multimode.hidden = 16
    config.translator.features = 8
    config.translator.disc_features = 8
    config.translator.bank_size = 8
    config.translator.frames_per_clip = 2
    config.eval.num_sample_inputs = 1
    return config
