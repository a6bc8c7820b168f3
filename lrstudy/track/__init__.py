"""The only MLflow writer: store set-up, runs, buffered metrics, tags and status."""
