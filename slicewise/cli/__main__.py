"""`python -m slicewise.cli ...`: the same as the `slicewise` console script."""

from slicewise.cli import main

main()
