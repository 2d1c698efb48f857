"""Input pipeline: TFDS data sources read with grain."""
