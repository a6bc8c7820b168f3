"""LR range test: `search.find_lr` on any module (restored by `snapshot`), returning a
`result.RangeTestResult`; the ramp's defaults in `ramp`, the torch-free suggestion `rules`, the
`figure`, and `study` (find-lr, lr: auto).
"""
