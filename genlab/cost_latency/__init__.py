"""Cheaper variants of a trained model (int8, bf16, ONNX Runtime, fewer DDIM steps, distilled
students) and what each costs in quality: the `05_cost_latency` report.
``load_variant(run_dir, name)`` (:mod:`.variants`) is the one loader every consumer uses."""
