"""Report stage (never imports torch): read MLflow -> tidy frames -> verdicts -> figures -> HTML.

For notebooks and the CLI: `results.load_results` (one row per trial) and `best.best_config`
(the study's best configuration, the one the page crowns).
"""
