"""Report figures: each is `*_data(frame)` (plain data, tested alone) + `draw_*(data, ax)`."""
