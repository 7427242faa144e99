"""`python -m moegs_bench` runs the command line."""

from .cli import main

main()
