"""Security and safety of a run: training-data poisoning, pre-training screens, adversarial
inputs and self-consuming feedback loops (`07_security.ipynb`)."""
