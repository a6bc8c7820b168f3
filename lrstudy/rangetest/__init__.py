"""LR range test: `search.find_lr` on any module, torch-free `rules`, and `study` (find-lr, lr: auto)."""
