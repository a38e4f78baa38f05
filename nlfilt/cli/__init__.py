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
    """Non-local image denoising: NLM, arc-cosine and neural-tangent-kernel filters with twicing."""


main.add_command(denoise_command)
main.add_command(info_command)
main.add_command(filter_map_command)
main.add_command(compare_network_command)
main.add_command(spectrum_command)
