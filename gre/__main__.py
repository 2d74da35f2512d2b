"""``python -m gre``: the same command line as the ``gre`` console script."""

from gre.cli import main

main()
