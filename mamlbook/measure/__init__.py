"""Measurements behind the README's speed and GPU tables (chapters 4, 7 and 9 cite them)."""

__all__ = ["bench", "gpu_speed", "gpu_graph", "precision", "amp_accuracy", "lstm_kernels", "episode_sampling",
           "jax_sinusoid", "race_jax"]
