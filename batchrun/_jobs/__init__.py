"""Dataset jobs: job files and their checks, evaluation, end-of-run dataset outputs."""
