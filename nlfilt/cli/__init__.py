"""The ``nlfilt`` command line (click).  One module per command; errors become click exceptions."""

from __future__ import annotations

import click

from nlfilt import __version__
from nlfilt.cli.compare_network import compare_network_command
from nlfilt.cli.denoise import denoise_command
from nlfilt.cli.filter_map import filter_map_command
from nlfilt.cli.info import info_command
from nlfilt.cli.spectrum import spectrum_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nlfilt")
def main() -> None:
    """Non-local image denoising.

    `nlfilt denoise` uses the collaborative method (two-stage filtering of
    grouped patches, BM3D's scheme) by default; `--method
    filter` gives the non-local filters W (NLM, arc-cosine, neural tangent
    kernel) with twicing, which filter-map, spectrum and compare-network
    study.  `nlfilt COMMAND --help` for each command's options.
    """


main.add_command(denoise_command)
main.add_command(info_command)
main.add_command(filter_map_command)
main.add_command(compare_network_command)
main.add_command(spectrum_command)
