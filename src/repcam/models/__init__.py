"""Classifiers and their training: backbones with offline weights, the demo's tiny CNN, training loops, partial
fine-tuning on a feature cache, the trained ACoL and CBAM baselines, and training compute (budget)."""
