"""Dense float64 reference implementation of the filters: the oracle for the fast paths.

Written straight from the formulas, independently of the package: explicit
index gathering for patches, full N x N matrices, dense eigenvalues.
"""

from __future__ import annotations

import numpy


def patches(image: numpy.ndarray, patch: int) -> numpy.ndarray:
    """(N, patch*patch*C) patch matrix with numpy 'reflect' padding."""
    image = numpy.asarray(image, dtype=numpy.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, _ = image.shape
    radius = patch // 2
    padded = numpy.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows, cols = numpy.meshgrid(numpy.arange(height), numpy.arange(width), indexing="ij")
    shifts = numpy.arange(patch)
    gathered = padded[rows[:, :, None, None] + shifts[:, None], cols[:, :, None, None] + shifts[None, :]]
    return gathered.reshape(height * width, -1)


def window_mask(shape: tuple[int, int], window: int | None, window_shape: str = "box") -> numpy.ndarray:
    """N x N mask of the pairs within the search window (all pairs for None): 1 inside a box window, the
    tent (1 - |d_row| / (r + 1)) (1 - |d_col| / (r + 1)) inside a tent window, 0 outside."""
    height, width = shape
    size = height * width
    if window is None:
        return numpy.ones((size, size), dtype=bool)
    rows, cols = numpy.divmod(numpy.arange(size), width)
    radius = window // 2
    steps_rows = numpy.abs(rows[:, None] - rows[None, :])
    steps_cols = numpy.abs(cols[:, None] - cols[None, :])
    inside = (steps_rows <= radius) & (steps_cols <= radius)
    if window_shape == "box":
        return inside
    return inside * (1 - steps_rows / (radius + 1)) * (1 - steps_cols / (radius + 1))


def _cosine_parts(gram: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """sqrt(Sigma_ii Sigma_jj) and the angle phi between the patches."""
    diag = numpy.diag(gram)
    scale = numpy.sqrt(numpy.outer(diag, diag))
    with numpy.errstate(invalid="ignore", divide="ignore"):
        cosine = numpy.where(scale > 0, gram / scale, 0.0)
    return scale, numpy.arccos(numpy.clip(cosine, -1, 1))


def affinity(image, *, kernel, patch, window, h=None, sigma=None, depth=1,
             window_shape="box") -> numpy.ndarray:
    """The dense N x N affinity K of the pinned formulas."""
    matrix = kernel_matrix(patches(image, patch), kernel=kernel, h=h, sigma=sigma, depth=depth)
    shape = numpy.shape(image)[:2]
    return matrix * window_mask(shape, window, window_shape)


def kernel_matrix(vectors, *, kernel, h=None, sigma=None, depth=1) -> numpy.ndarray:
    """K over all pairs of the patch vectors (rows of ``vectors``)."""
    dims = vectors.shape[1]
    if kernel == "nlm":
        sqdist = numpy.zeros((vectors.shape[0],) * 2)
        for column in vectors.T:
            sqdist += (column[:, None] - column[None, :]) ** 2
        matrix = numpy.exp(-numpy.maximum(sqdist / dims - 2 * sigma**2, 0) / h**2)
    else:
        sigma_prev = vectors @ vectors.T
        theta = sigma_prev.copy()
        for _ in range(1 if kernel == "arccos" else depth):
            scale, phi = _cosine_parts(sigma_prev)
            sigma_next = scale / numpy.pi * (numpy.sin(phi) + (numpy.pi - phi) * numpy.cos(phi))
            theta = sigma_next + theta * (numpy.pi - phi) / numpy.pi
            sigma_prev = sigma_next
        matrix = sigma_prev if kernel == "arccos" else theta
    return matrix


def filter_matrix(image, **options) -> numpy.ndarray:
    """The dense filter W: row-normalised for NLM, divided by lambda_max otherwise."""
    matrix = affinity(image, **options)
    if options["kernel"] == "nlm":
        return matrix / matrix.sum(axis=1, keepdims=True)
    return matrix / numpy.linalg.eigvalsh(matrix)[-1]


def twicing(image, iterations, **options) -> numpy.ndarray:
    """z_t = z_{t-1} + W (y - z_{t-1}) from z_0 = 0, dense."""
    weights = filter_matrix(image, **options)
    flat = numpy.asarray(image, dtype=numpy.float64).reshape(weights.shape[0], -1)
    estimate = numpy.zeros_like(flat)
    for _ in range(iterations):
        estimate = estimate + weights @ (flat - estimate)
    return estimate.reshape(numpy.shape(image))


def volume_patches(volume: numpy.ndarray, patch: tuple[int, int, int]) -> numpy.ndarray:
    """(N, prod(patch)*C) patch matrix of a (Z, H, W) or (Z, H, W, C) volume, 'reflect' padding."""
    volume = numpy.asarray(volume, dtype=numpy.float64)
    if volume.ndim == 3:
        volume = volume[..., None]
    radii = [side // 2 for side in patch]
    padded = numpy.pad(volume, [(radius, radius) for radius in radii] + [(0, 0)], mode="reflect")
    rows = []
    for index in numpy.ndindex(*volume.shape[:3]):
        box = padded[tuple(slice(start, start + side) for start, side in zip(index, patch, strict=True))]
        rows.append(box.reshape(-1))
    return numpy.array(rows)


def volume_affinity(volume, *, kernel, patch, window, h=None, sigma=None, depth=1) -> numpy.ndarray:
    """The dense affinity of a volume over box patches, box windows (None: all pairs)."""
    matrix = kernel_matrix(volume_patches(volume, patch), kernel=kernel, h=h, sigma=sigma, depth=depth)
    if window is None:
        return matrix
    coordinates = numpy.array(list(numpy.ndindex(*numpy.shape(volume)[:3])))
    near = numpy.ones(matrix.shape, dtype=bool)
    for axis, side in enumerate(window):
        near &= numpy.abs(coordinates[:, None, axis] - coordinates[None, :, axis]) <= side // 2
    return matrix * near
