// Windowed non-local means, one thread per query pixel: K V and K 1 without storing K.
// Twin: nlfilt/operators.py WindowedAffinity with NLMKernel (and tests/reference.py).
// NLFILT_REAL is float or double, NLFILT_MAX_COLUMNS the most right-hand-side columns.

extern "C" __global__ void nlfilt_windowed_nlm(const NLFILT_REAL* padded, const NLFILT_REAL* values,
                                               NLFILT_REAL* out, const int height, const int width,
                                               const int channels, const int patch, const int window,
                                               const int columns, const NLFILT_REAL offset,
                                               const NLFILT_REAL floor_value) {
    // padded: features (centred, divided by h sqrt(d)) with reflect padding patch // 2,
    //         shape (height + patch - 1, width + patch - 1, channels);
    // values, out: (height * width, columns) C-contiguous.
    // out[i] = sum over j with |row_j - row_i| <= window // 2 and |col_j - col_i| <= window // 2
    //          of exp(clip(offset - |a_i - a_j|^2, floor_value, 0)) * values[j]
    const int radius = window / 2;
    const int padded_width = width + patch - 1;
    const long long pixels = (long long)height * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < pixels;
         i += (long long)gridDim.x * blockDim.x) {
        const int row = (int)(i / width);
        const int col = (int)(i % width);
        // total[] is indexed by compile-time constants only (unrolled, guarded by m < columns), so it
        // stays in registers instead of local memory
        NLFILT_REAL total[NLFILT_MAX_COLUMNS];
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) total[m] = 0;
        const int row_first = max(row - radius, 0), row_last = min(row + radius, height - 1);
        const int col_first = max(col - radius, 0), col_last = min(col + radius, width - 1);
        for (int r = row_first; r <= row_last; ++r) {
            for (int c = col_first; c <= col_last; ++c) {
                NLFILT_REAL distance = 0;
                for (int a = 0; a < patch; ++a) {
                    const NLFILT_REAL* p = padded + ((long long)(row + a) * padded_width + col) * channels;
                    const NLFILT_REAL* q = padded + ((long long)(r + a) * padded_width + c) * channels;
                    for (int e = 0; e < patch * channels; ++e) {
                        const NLFILT_REAL difference = p[e] - q[e];
                        distance += difference * difference;
                    }
                }
                NLFILT_REAL t = offset - distance;
                t = t < floor_value ? floor_value : t;
                t = t > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : t;
                const NLFILT_REAL weight = exp(t);
                const NLFILT_REAL* v = values + ((long long)r * width + c) * columns;
#pragma unroll
                for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
                    if (m < columns) total[m] += weight * v[m];
                }
            }
        }
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
            if (m < columns) out[i * columns + m] = total[m];
        }
    }
}
