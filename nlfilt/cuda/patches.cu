// Patch extraction with numpy 'reflect' padding.
// Twin: nlfilt/patches.py (patch_matrix).
// NLFILT_REAL is float or double (set at compile time).

__device__ int nlfilt_reflect(int index, const int length) {
    // numpy 'reflect' (mirror about the edge pixel, not repeating it); the radius is < length
    if (index < 0) index = -index;
    if (index >= length) index = 2 * (length - 1) - index;
    return index;
}

extern "C" __global__ void nlfilt_patches(const NLFILT_REAL* image, NLFILT_REAL* out, const int height,
                                          const int width, const int channels, const int patch) {
    // image: (height, width, channels) C-contiguous; out: (height * width, patch * patch * channels),
    // column ((row * patch) + col) * channels + channel, as patch_matrix lays it out.
    const long long dims = (long long)patch * patch * channels;
    const long long total = (long long)height * width * dims;
    const int radius = patch / 2;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long pixel = k / dims;
        const int column = (int)(k % dims);
        const int channel = column % channels;
        const int offset = column / channels;
        const int source_row = nlfilt_reflect((int)(pixel / width) + offset / patch - radius, height);
        const int source_col = nlfilt_reflect((int)(pixel % width) + offset % patch - radius, width);
        out[k] = image[((long long)source_row * width + source_col) * channels + channel];
    }
}
