"""Train stage: data sets as tensors, reference models, optimizers, and one trial under Lightning.

Knows nothing of MLflow: tracking arrives as a Lightning callback from `lrstudy.track`.
"""
