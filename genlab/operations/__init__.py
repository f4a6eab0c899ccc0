"""Operating a model: tracking and registry, model card, online monitoring, canary decisions."""
