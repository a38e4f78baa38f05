// Windowed non-local means, one thread per query pixel: K V and K 1 without storing K.
// Twin: nlfilt/operators.py WindowedAffinity with NLMKernel (and tests/reference.py).
// NLFILT_REAL is float or double, NLFILT_MAX_COLUMNS the most right-hand-side columns.

// NLM's weight of a squared patch distance: exp(clip(offset - distance, floor_value, 0)).
static __device__ __forceinline__ NLFILT_REAL nlfilt_nlm_weight(const NLFILT_REAL distance,
                                                              const NLFILT_REAL offset,
                                                              const NLFILT_REAL floor_value) {
    NLFILT_REAL t = offset - distance;
    t = t < floor_value ? floor_value : t;
    t = t > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : t;
    return exp(t);
}

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
                const NLFILT_REAL weight = nlfilt_nlm_weight(distance, offset, floor_value);
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

// Windowed non-local means of a volume, one thread per voxel: K V and K 1 without storing K.
// Twin: nlfilt/operators.py WindowedAffinity on a (Z, H, W, C) volume with NLMKernel (box patches and
// windows, one side per axis; tests/reference.py volume_affinity).
extern "C" __global__ void nlfilt_windowed_nlm3d(const NLFILT_REAL* padded, const NLFILT_REAL* values,
                                                 NLFILT_REAL* out, const int slices, const int height,
                                                 const int width, const int channels, const int patch_z,
                                                 const int patch_y, const int patch_x, const int window_z,
                                                 const int window_y, const int window_x, const int columns,
                                                 const NLFILT_REAL offset, const NLFILT_REAL floor_value) {
    // padded: features with reflect padding (patch_z // 2, patch_y // 2, patch_x // 2), shape
    //         (slices + patch_z - 1, height + patch_y - 1, width + patch_x - 1, channels);
    // values, out: (slices * height * width, columns) C-contiguous.
    // out[i] = sum over j within the window box of exp(clip(offset - |a_i - a_j|^2, floor_value, 0)) v[j]
    const int padded_height = height + patch_y - 1, padded_width = width + patch_x - 1;
    const long long plane = (long long)height * width;
    const long long voxels = plane * slices;
    const int run = patch_x * channels;  // one patch row: contiguous in the padded features
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < voxels;
         i += (long long)gridDim.x * blockDim.x) {
        const int z = (int)(i / plane);
        const int row = (int)((i % plane) / width);
        const int col = (int)(i % width);
        NLFILT_REAL total[NLFILT_MAX_COLUMNS];
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) total[m] = 0;
        const int z_first = max(z - window_z / 2, 0), z_last = min(z + window_z / 2, slices - 1);
        const int row_first = max(row - window_y / 2, 0), row_last = min(row + window_y / 2, height - 1);
        const int col_first = max(col - window_x / 2, 0), col_last = min(col + window_x / 2, width - 1);
        for (int zz = z_first; zz <= z_last; ++zz) {
            for (int r = row_first; r <= row_last; ++r) {
                for (int c = col_first; c <= col_last; ++c) {
                    NLFILT_REAL distance = 0;
                    for (int a = 0; a < patch_z; ++a) {
                        for (int b = 0; b < patch_y; ++b) {
                            const NLFILT_REAL* p =
                                padded + (((long long)(z + a) * padded_height + row + b) * padded_width + col)
                                * channels;
                            const NLFILT_REAL* q =
                                padded + (((long long)(zz + a) * padded_height + r + b) * padded_width + c)
                                * channels;
                            for (int e = 0; e < run; ++e) {
                                const NLFILT_REAL difference = p[e] - q[e];
                                distance += difference * difference;
                            }
                        }
                    }
                    const NLFILT_REAL weight = nlfilt_nlm_weight(distance, offset, floor_value);
                    const NLFILT_REAL* v = values + (((long long)zz * height + r) * width + c) * columns;
#pragma unroll
                    for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
                        if (m < columns) total[m] += weight * v[m];
                    }
                }
            }
        }
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
            if (m < columns) out[i * columns + m] = total[m];
        }
    }
}
