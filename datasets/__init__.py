"""TFDS dataset builders of cmm_jax (array_record format, read without TensorFlow)."""
