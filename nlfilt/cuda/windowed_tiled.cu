// Windowed non-local means by tiles: each output tile and its halo loaded once, the box sums slid in
// registers, each pair of opposite window offsets evaluated once.
// Twin: nlfilt/operators.py WindowedAffinity with NLMKernel (and nlfilt_windowed_nlm, nlfilt_windowed_box).
// NLFILT_REAL is float or double.

__device__ __forceinline__ NLFILT_REAL nlfilt_squared_difference(const NLFILT_REAL* features, const int row,
                                                                 const int col, const int row_step,
                                                                 const int col_step, const int feature_cols,
                                                                 const int channels) {
    // sum over channels of (x(row, col) - x(row + row_step, col + col_step))^2 in the block's feature region
    const NLFILT_REAL* p = features + ((long long)row * feature_cols + col) * channels;
    const NLFILT_REAL* q = features + ((long long)(row + row_step) * feature_cols + col + col_step) * channels;
    NLFILT_REAL total = 0;
    for (int k = 0; k < channels; ++k) {
        const NLFILT_REAL difference = p[k] - q[k];
        total += difference * difference;
    }
    return total;
}

extern "C" __global__ void nlfilt_windowed_tiled(const NLFILT_REAL* padded, const NLFILT_REAL* values,
                                                 NLFILT_REAL* out, const int height, const int width,
                                                 const int channels, const int patch, const int window,
                                                 const int columns, const int tile_rows,
                                                 const NLFILT_REAL offset, const NLFILT_REAL floor_value) {
    // Same inputs and result as nlfilt_windowed_nlm (padded: (height + patch - 1, width + patch - 1,
    // channels) features with reflect padding; values, out: (height * width, columns)); out must be zero
    // before the launch (every term is added atomically).  patch <= 32.
    // Block (bx, by) owns the pairs (i, i + (dr, dc)) whose first pixel i lies in its tile of tile_rows rows
    // from by * tile_rows and 33 - patch columns from bx * (33 - patch), for the offsets with dr > 0, or
    // dr = 0 and dc >= 0: each unordered pair once.  It loads the features of the tile's patches and of
    // their partners, and the values of the tile and its partners, into shared memory once; each warp takes
    // one offset at a time: lane x holds the patch column c0 + x, slides the column sums of the squared
    // differences down the tile's rows (one row in, one out), and the box sums across the patch come from
    // a warp prefix scan of them.  The weight w adds w v_j to i and, mirrored, w v_i to j, into a shared
    // accumulator over the tile and its partners (shared atomics), which is added to out at the end.
    extern __shared__ long long nlfilt_tiled_shared[];  // long long: aligned for double
    const int radius = window / 2, tile_cols = 33 - patch;
    const int first_row = blockIdx.y * tile_rows, first_col = blockIdx.x * tile_cols;
    // the features (padded coordinates): rows first_row .. first_row + tile_rows + radius + patch - 2,
    // columns first_col - radius .. first_col + 31 + radius
    const int feature_rows = tile_rows + radius + patch - 1, feature_cols = 32 + 2 * radius;
    // the pixels of the tile and of its partners: rows first_row .. first_row + tile_rows + radius - 1,
    // columns first_col - radius .. first_col + tile_cols + radius - 1
    const int region_rows = tile_rows + radius, region_cols = tile_cols + 2 * radius;
    NLFILT_REAL* features = (NLFILT_REAL*)nlfilt_tiled_shared;
    NLFILT_REAL* region_values = features + feature_rows * feature_cols * channels;
    NLFILT_REAL* sums = region_values + region_rows * region_cols * columns;
    const int padded_height = height + patch - 1, padded_width = width + patch - 1;
    for (int e = threadIdx.x; e < feature_rows * feature_cols * channels; e += blockDim.x) {
        const int row = first_row + e / (feature_cols * channels);
        const int col = first_col - radius + (e / channels) % feature_cols;
        const bool inside = row < padded_height && col >= 0 && col < padded_width;
        features[e] = inside ? padded[((long long)row * padded_width + col) * channels + e % channels]
                             : (NLFILT_REAL)0;
    }
    for (int e = threadIdx.x; e < region_rows * region_cols * columns; e += blockDim.x) {
        const int row = first_row + e / (region_cols * columns);
        const int col = first_col - radius + (e / columns) % region_cols;
        const bool inside = row < height && col >= 0 && col < width;
        region_values[e] = inside ? values[((long long)row * width + col) * columns + e % columns]
                                  : (NLFILT_REAL)0;
        sums[e] = 0;
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const int side = 2 * radius + 1, half = (side * side + 1) / 2;
    const int col = first_col + lane;
    for (int k = warp; k < half; k += warps) {
        const int index = side * side / 2 + k;  // the offsets from the centre on, row by row
        const int row_step = index / side - radius, col_step = index % side - radius;
        // the column sum over the patch rows of pixel row first_row + y, for the patch column of this lane
        NLFILT_REAL column_sum = 0;
        for (int u = 0; u < patch - 1; ++u) {
            column_sum += nlfilt_squared_difference(features, u, lane + radius, row_step, col_step, feature_cols,
                                                    channels);
        }
        for (int y = 0; y < tile_rows; ++y) {
            column_sum += nlfilt_squared_difference(features, y + patch - 1, lane + radius, row_step, col_step,
                                                    feature_cols, channels);
            NLFILT_REAL prefix = column_sum;  // inclusive scan over the lanes
            for (int step = 1; step < 32; step *= 2) {
                const NLFILT_REAL other = __shfl_up_sync(0xffffffffu, prefix, step);
                if (lane >= step) prefix += other;
            }
            const NLFILT_REAL high = __shfl_sync(0xffffffffu, prefix, min(lane + patch - 1, 31));
            const NLFILT_REAL low = __shfl_sync(0xffffffffu, prefix, max(lane - 1, 0));
            const NLFILT_REAL distance = high - (lane > 0 ? low : (NLFILT_REAL)0);
            column_sum -= nlfilt_squared_difference(features, y, lane + radius, row_step, col_step, feature_cols,
                                                    channels);
            const int row = first_row + y, partner_row = row + row_step, partner_col = col + col_step;
            if (lane < tile_cols && row < height && col < width && partner_row < height && partner_col >= 0 &&
                partner_col < width) {
                const NLFILT_REAL weight = nlfilt_nlm_weight(distance, offset, floor_value);
                const int own = (y * region_cols + lane + radius) * columns;
                const int other = ((y + row_step) * region_cols + lane + radius + col_step) * columns;
                for (int m = 0; m < columns; ++m) {
                    atomicAdd(sums + own + m, weight * region_values[other + m]);
                    if (index != side * side / 2) atomicAdd(sums + other + m, weight * region_values[own + m]);
                }
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < region_rows * region_cols * columns; e += blockDim.x) {
        const int row = first_row + e / (region_cols * columns);
        const int region_col = first_col - radius + (e / columns) % region_cols;
        if (row < height && region_col >= 0 && region_col < width && sums[e] != (NLFILT_REAL)0) {
            atomicAdd(out + ((long long)row * width + region_col) * columns + e % columns, sums[e]);
        }
    }
}
