"""`python -m pipeline.cli …` is the same as the `curate` command (tests and images use it)."""
from pipeline.cli import main

main()
