"""Scoring maps: IoU and PxAP, the IRN protocol, paired bootstrap intervals, the run's evaluation of its methods,
faithfulness metrics and ``repcam score``."""
