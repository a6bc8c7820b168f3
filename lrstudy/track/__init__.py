"""Track stage, the only MLflow writer: the Lightning callback, store set-up, runs, claims,
buffered metrics, tags and status."""
