"""``python -m xcombus``: the command line (the same as the ``xcombus`` script)."""

from .cli import main

main()
