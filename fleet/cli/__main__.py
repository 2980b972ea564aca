"""`python -m fleet.cli`: the same program as the `fleet` console script."""

from fleet.cli import main

main()
