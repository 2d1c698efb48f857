"""cmm_jax: landmark-guided diverse smile generation (CMM-Net) in JAX/Flax."""

__version__ = "0.1.0"
