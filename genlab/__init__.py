"""genlab: generative-model research template (data, Lightning models, papermill reports)."""

__version__ = "0.1.0"
