"""Stages `train` and `score`: labels, propensity and CLV models, evaluation, MLflow."""
