"""Schedules as pure functions `step -> multiplier of the peak LR` (torch-free).

`shapes.py` holds the shapes, `catalog.py` the registry, the one warmup join and `Plateau`.
"""
