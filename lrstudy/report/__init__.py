"""Report stage (never imports torch): read MLflow -> tidy frames -> verdicts -> figures -> HTML."""
