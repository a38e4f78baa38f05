"""filter_spectrum: the leading eigenpairs of W from Lanczos, against a dense eigen-decomposition."""

from __future__ import annotations

import numpy
import pytest

import nlfilt

IMAGE = numpy.random.default_rng(51).random((12, 12)) * 100


@pytest.mark.parametrize("options", [{"kernel": "arccos", "window": None}, {"kernel": "ntk", "depth": 2,
                                     "window": 5, "window_shape": "tent"},
                                     {"window": 5, "sigma": 20.0, "steps": 144},
                                     {"window": 5, "sigma": 20.0, "normalize": "sinkhorn", "steps": 144}],
                         ids=["arccos global", "ntk tent", "nlm rows", "nlm sinkhorn"])
def test_the_leading_eigenpairs_are_those_of_the_dense_filter(options):
    spectrum = nlfilt.filter_spectrum(IMAGE, 4, dtype=numpy.float64, device="cpu", **options)
    options.pop("steps", None)
    weights = nlfilt.filter_matrix(IMAGE, dtype=numpy.float64, device="cpu", **options)
    values, vectors = numpy.linalg.eig(weights)
    order = numpy.argsort(-values.real)[:4]
    numpy.testing.assert_allclose(spectrum.eigenvalues, values.real[order], rtol=1e-6, atol=1e-9)
    for index, column in enumerate(order[:3]):
        expected = vectors[:, column].real / numpy.linalg.norm(vectors[:, column].real)
        assert abs(expected @ spectrum.eigenvectors[index].ravel()) > 1 - 1e-6
    numpy.testing.assert_allclose(weights @ spectrum.eigenvectors[0].ravel(),
                                  spectrum.eigenvalues[0] * spectrum.eigenvectors[0].ravel(), atol=1e-8)


def test_spectrum_shapes_progress_and_errors():
    calls = []
    spectrum = nlfilt.filter_spectrum(IMAGE, 3, window=5, device="cpu", progress=lambda d, t: calls.append(d))
    assert spectrum.eigenvectors.shape == (3, 12, 12) and spectrum.eigenvalues.shape == (3,)
    assert calls and calls[-1] == spectrum.applications
    volume = numpy.random.default_rng(2).random((3, 8, 8)) * 100
    assert nlfilt.filter_spectrum(volume, 2, channel_axis=None, patch=(1, 3, 3), window=(3, 3, 3),
                                  device="cpu").eigenvectors.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="count must be at most"):
        nlfilt.filter_spectrum(IMAGE, 200, device="cpu")
    with pytest.raises(ValueError, match="steps"):
        nlfilt.filter_spectrum(IMAGE, 5, steps=2, device="cpu")


def test_the_spectrum_command_draws_the_figure(tmp_path):
    import imageio.v3 as iio
    from click.testing import CliRunner

    from nlfilt.cli import main

    source = tmp_path / "scene.png"
    iio.imwrite(source, numpy.clip(IMAGE * 2.5, 0, 255).astype(numpy.uint8))
    target = tmp_path / "spectrum.png"
    result = CliRunner().invoke(main, ["spectrum", str(source), "-o", str(target), "--count", "6", "--kernel",
                                       "arccos", "--window", "5", "--window-shape", "tent"])
    assert result.exit_code == 0, result.output
    figure = iio.imread(target)
    assert figure.ndim == 3 and figure.dtype == numpy.uint8 and figure.shape[0] > 2 * 96
    assert result.stdout.splitlines()[1].split() == ["1", "1"]  # rank 1: eigenvalue 1
    refused = CliRunner().invoke(main, ["spectrum", str(source), "-o", str(tmp_path / "s.jpgx")])
    assert refused.exit_code == 2 and "unknown image format" in refused.output
