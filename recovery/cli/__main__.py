"""`python -m recovery.cli ...` runs the `recovery` command."""

from recovery.cli import main

main()
