// Windowed non-local means with O(1) work per pixel and offset: box sums of the squared-difference image
// by warp prefix scans in shared memory, instead of the patch**2 loop of nlfilt_windowed_nlm.
// Twin: nlfilt/operators.py WindowedAffinity with NLMKernel (and nlfilt_windowed_nlm).
// NLFILT_REAL is float or double, NLFILT_MAX_COLUMNS the most right-hand-side columns.

// Launch geometry (NLFILT_FUSED_*, NLFILT_BOX_*) comes from nlfilt/cuda/__init__.py as -D options.

__device__ NLFILT_REAL nlfilt_warp_inclusive_scan(NLFILT_REAL value, const int lane) {
    for (int step = 1; step < 32; step *= 2) {
        const NLFILT_REAL other = __shfl_up_sync(0xffffffffu, value, step);
        if (lane >= step) value += other;
    }
    return value;
}

extern "C" __global__ void nlfilt_windowed_box(const NLFILT_REAL* padded, const NLFILT_REAL* values,
                                               NLFILT_REAL* out, const int height, const int width,
                                               const int channels, const int patch, const int window,
                                               const int columns, const NLFILT_REAL offset,
                                               const NLFILT_REAL floor_value) {
    // Same inputs and result as nlfilt_windowed_nlm (padded: (height + patch - 1, width + patch - 1,
    // channels) features with reflect padding; values, out: (height * width, columns)), for
    // patch <= NLFILT_BOX_MAX_PATCH.  Block (bx, by) owns the output tile of rows by*8 .. by*8+7 and
    // columns bx*32 .. bx*32+31; per offset (dr, dc) of the window it
    //   1. writes the squared differences D(r, c) = |x(r, c) - x(r + dr, c + dc)|^2 (channels summed) of
    //      the tile's patch region ((8 + patch - 1) x (32 + patch - 1), padded coordinates) to shared memory;
    //   2. one warp per region row: the horizontal box sums H(r, x) = sum_{a < patch} D(r, x + a) as the
    //      difference of two entries of the row's prefix sums (a warp scan over two 32-wide segments);
    //   3. one warp per group of columns: the vertical box sums B(y, x) = sum_{a < patch} H(y + a, x)
    //      the same way (one 32-high segment);
    //   4. each thread turns B of its pixel into the weight and accumulates weight * values[j].
    // The patch region overlaps the image's border reflection exactly as the padded array does.
    __shared__ NLFILT_REAL differences[NLFILT_BOX_HEIGHT + NLFILT_BOX_MAX_PATCH - 1]
                                      [2 * NLFILT_BOX_WIDTH + 1];
    __shared__ NLFILT_REAL horizontal[NLFILT_BOX_HEIGHT + NLFILT_BOX_MAX_PATCH - 1][NLFILT_BOX_WIDTH + 1];
    __shared__ NLFILT_REAL boxes[NLFILT_BOX_HEIGHT][NLFILT_BOX_WIDTH + 1];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int row0 = blockIdx.y * NLFILT_BOX_HEIGHT, col0 = blockIdx.x * NLFILT_BOX_WIDTH;
    const int row = row0 + warp, col = col0 + lane;  // this thread's output pixel
    const bool inside = row < height && col < width;
    const int padded_height = height + patch - 1, padded_width = width + patch - 1;
    const int region_rows = NLFILT_BOX_HEIGHT + patch - 1, region_cols = NLFILT_BOX_WIDTH + patch - 1;
    const int radius = window / 2;
    // total[] is indexed by compile-time constants only (unrolled, guarded by m < columns): registers
    NLFILT_REAL total[NLFILT_MAX_COLUMNS];
#pragma unroll
    for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) total[m] = 0;
    for (int dr = -radius; dr <= radius; ++dr) {
        for (int dc = -radius; dc <= radius; ++dc) {
            // 1. squared differences over the region (zero where a partner falls outside the padded image;
            //    such entries only feed pixels whose partner is outside the image, which are skipped)
            for (int e = threadIdx.x; e < region_rows * region_cols; e += blockDim.x) {
                const int r = e / region_cols, c = e % region_cols;
                const int pr = row0 + r, pc = col0 + c, qr = pr + dr, qc = pc + dc;
                NLFILT_REAL distance = 0;
                if (pr < padded_height && pc < padded_width && qr >= 0 && qr < padded_height && qc >= 0 &&
                    qc < padded_width) {
                    const NLFILT_REAL* p = padded + ((long long)pr * padded_width + pc) * channels;
                    const NLFILT_REAL* q = padded + ((long long)qr * padded_width + qc) * channels;
                    for (int k = 0; k < channels; ++k) {
                        const NLFILT_REAL difference = p[k] - q[k];
                        distance += difference * difference;
                    }
                }
                differences[r][c] = distance;
            }
            __syncthreads();
            // 2. horizontal box sums from the prefix sums of each region row (two 32-wide segments)
            for (int r = warp; r < region_rows; r += NLFILT_BOX_HEIGHT) {
                const NLFILT_REAL first = nlfilt_warp_inclusive_scan(differences[r][lane], lane);
                const NLFILT_REAL second = nlfilt_warp_inclusive_scan(
                    lane + 32 < region_cols ? differences[r][lane + 32] : (NLFILT_REAL)0, lane);
                const NLFILT_REAL first_total = __shfl_sync(0xffffffffu, first, 31);
                const int high = lane + patch - 1;  // prefix index of the window's last entry
                const NLFILT_REAL high_first = __shfl_sync(0xffffffffu, first, high < 32 ? high : 31);
                const NLFILT_REAL high_second = __shfl_sync(0xffffffffu, second, high < 32 ? 0 : high - 32);
                const NLFILT_REAL low = __shfl_sync(0xffffffffu, first, lane > 0 ? lane - 1 : 0);
                const NLFILT_REAL prefix_high = high < 32 ? high_first : first_total + high_second;
                horizontal[r][lane] = prefix_high - (lane > 0 ? low : (NLFILT_REAL)0);
            }
            __syncthreads();
            // 3. vertical box sums from the prefix sums of each column of H (one 32-high segment)
            for (int x = warp; x < NLFILT_BOX_WIDTH; x += NLFILT_BOX_HEIGHT) {
                const NLFILT_REAL prefix = nlfilt_warp_inclusive_scan(
                    lane < region_rows ? horizontal[lane][x] : (NLFILT_REAL)0, lane);
                const int high = lane + patch - 1 < 32 ? lane + patch - 1 : 31;
                const NLFILT_REAL prefix_high = __shfl_sync(0xffffffffu, prefix, high);
                const NLFILT_REAL low = __shfl_sync(0xffffffffu, prefix, lane > 0 ? lane - 1 : 0);
                if (lane < NLFILT_BOX_HEIGHT) boxes[lane][x] = prefix_high - (lane > 0 ? low : (NLFILT_REAL)0);
            }
            __syncthreads();
            // 4. the weight of (this pixel, this pixel + (dr, dc)) and its share of K V
            const int partner_row = row + dr, partner_col = col + dc;
            if (inside && partner_row >= 0 && partner_row < height && partner_col >= 0 && partner_col < width) {
                const NLFILT_REAL weight = nlfilt_nlm_weight(boxes[warp][lane], offset, floor_value);
                const NLFILT_REAL* v = values + ((long long)partner_row * width + partner_col) * columns;
#pragma unroll
                for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
                    if (m < columns) total[m] += weight * v[m];
                }
            }
            __syncthreads();  // the shared arrays are rewritten for the next offset
        }
    }
    if (inside) {
        const long long i = (long long)row * width + col;
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
            if (m < columns) out[i * columns + m] = total[m];
        }
    }
}
