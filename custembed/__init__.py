"""custembed: customer behaviour embeddings, propensity scores and lift tables on Spark."""

__version__ = "0.1.0"
