"""Transferability studies: running them (spec, runner), their results tables (results), the
transfer analysis and figures (analysis, plots), and the evaluation of source rankings (ranking).
See docs/studies.md."""
