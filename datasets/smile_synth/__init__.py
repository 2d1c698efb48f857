"""smile_synth: procedural smile landmark sequences (see cmm_jax.data.synth)."""

from .smile_synth_dataset_builder import Builder, SmileSynthConfig, build, make_config

__all__ = ["Builder", "SmileSynthConfig", "build", "make_config"]
