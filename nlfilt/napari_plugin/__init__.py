"""nlfilt's napari plugin (``pip install 'nlfilt[napari]'``): a dock widget that denoises an image layer, and
nlfilt's sample image as sample data.

napari finds it through the ``napari.manifest`` entry point (``napari.yaml``
beside this file); :mod:`nlfilt.napari_plugin.work` is the part without Qt
(planning, refusals, the filtering itself), :mod:`nlfilt.napari_plugin.widget`
the widget.
"""

from nlfilt.napari_plugin.sample import sample_data

__all__ = ["sample_data"]
