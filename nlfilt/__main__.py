"""``python -m nlfilt``: the command line."""

from nlfilt.cli import main

main(prog_name="nlfilt")
