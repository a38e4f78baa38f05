// The collaborative filter's two primitives: block matching keeping the k nearest, and one stage of
// group filtering added into one accumulator.
// Twin: nlfilt/collaborative.py ArrayGroups (and nlfilt/jit_groups.py, the compiled CPU kernels).
// NLFILT_REAL is float or double; the launch geometry (NLFILT_MATCH_*, NLFILT_GROUP_THREADS) comes from
// nlfilt/cuda/__init__.py as -D options.

extern "C" __global__ void nlfilt_bm_match(const int* levels, const int* rows, const int* cols, int* members,
                                           const int height, const int width, const int row_count,
                                           const int col_count, const int patch, const int radius,
                                           const int group) {
    // levels: (height, width) int32 quantised guide; rows, cols: the reference grid; members:
    // (row_count * col_count, group) int32 flat top-left pixels, references row by row.
    // Block (bx, by) serves the NLFILT_MATCH_ROWS x NLFILT_MATCH_COLS references of grid rows
    // by * NLFILT_MATCH_ROWS... and columns bx * NLFILT_MATCH_COLS..., one thread each (threadIdx.x: row,
    // threadIdx.y... flattened as threadIdx.x = row * NLFILT_MATCH_COLS + column).  The block's search
    // region of levels is loaded once into shared memory, then each thread visits its window's offsets in
    // index order, sums its patch distance exactly (int64) and keeps the group - 1 smallest keys
    // distance * offsets + offset index in a sorted list in shared memory (unique keys: the order of the
    // members does not depend on how they were found).  The reference heads its group; a reference with
    // fewer candidates inside the image repeats its members in order.
    extern __shared__ long long nlfilt_match_shared[];
    const int local_row = threadIdx.x / NLFILT_MATCH_COLS, local_col = threadIdx.x % NLFILT_MATCH_COLS;
    const int first_row = blockIdx.y * NLFILT_MATCH_ROWS, first_col = blockIdx.x * NLFILT_MATCH_COLS;
    const int last_row = min(first_row + NLFILT_MATCH_ROWS, row_count) - 1;
    const int last_col = min(first_col + NLFILT_MATCH_COLS, col_count) - 1;
    // the region: every candidate patch of the block's references that lies in the image
    const int top = max(rows[first_row] - radius, 0), left = max(cols[first_col] - radius, 0);
    const int bottom = min(rows[last_row] + radius + patch, height);
    const int right = min(cols[last_col] + radius + patch, width);
    const int region_width = right - left;
    const int slots = group - 1;
    long long* keys = nlfilt_match_shared;  // [slot][thread]
    int* region = (int*)(nlfilt_match_shared + (long long)slots * blockDim.x);
    for (int e = threadIdx.x; e < (bottom - top) * region_width; e += blockDim.x) {
        region[e] = levels[(long long)(top + e / region_width) * width + left + e % region_width];
    }
    __syncthreads();
    const int grid_row = first_row + local_row, grid_col = first_col + local_col;
    if (grid_row >= row_count || grid_col >= col_count) return;
    const long long invalid = 0x7fffffffffffffffLL;
    for (int slot = 0; slot < slots; ++slot) keys[slot * blockDim.x + threadIdx.x] = invalid;
    const int row = rows[grid_row], col = cols[grid_col], side = 2 * radius + 1;
    const long long offsets = (long long)side * side;
    const int* reference = region + (row - top) * region_width + (col - left);
    for (int dy = -radius; dy <= radius; ++dy) {
        if (row + dy < 0 || row + dy > height - patch) continue;
        for (int dx = -radius; dx <= radius; ++dx) {
            if ((dy == 0 && dx == 0) || col + dx < 0 || col + dx > width - patch || slots == 0) continue;
            const int* candidate = reference + dy * region_width + dx;
            long long distance = 0;
            for (int u = 0; u < patch; ++u) {
                for (int v = 0; v < patch; ++v) {
                    const long long difference = reference[u * region_width + v] - candidate[u * region_width + v];
                    distance += difference * difference;
                }
            }
            const long long key = distance * offsets + (long long)(dy + radius) * side + dx + radius;
            int position = slots - 1;
            if (key >= keys[position * blockDim.x + threadIdx.x]) continue;
            while (position > 0 && keys[(position - 1) * blockDim.x + threadIdx.x] > key) {
                keys[position * blockDim.x + threadIdx.x] = keys[(position - 1) * blockDim.x + threadIdx.x];
                --position;
            }
            keys[position * blockDim.x + threadIdx.x] = key;
        }
    }
    int* out = members + ((long long)grid_row * col_count + grid_col) * group;
    const int origin = row * width + col;
    out[0] = origin;
    int found = 1;
    for (int slot = 0; slot < slots; ++slot) {
        const long long key = keys[slot * blockDim.x + threadIdx.x];
        if (key == invalid) break;
        const int index = (int)(key % offsets);
        out[found++] = origin + (index / side - radius) * width + index % side - radius;
    }
    for (int slot = found; slot < group; ++slot) out[slot] = out[slot % found];
}

extern "C" __global__ void nlfilt_bm_match_series(const int* levels, const int* rows, const int* cols,
                                                  int* members, const int frames, const int height,
                                                  const int width, const int row_count, const int col_count,
                                                  const int patch, const int radius, const int follow,
                                                  const int reach, const int group) {
    // levels: (frames, height, width) int32 quantised guides; rows: the reference grid's rows; cols: its
    // columns over the frames laid side by side (frame * width + column); members: (row_count * col_count,
    // group) int32 flat top-left pixels of the wide image (row * frames * width + frame * width + column),
    // references row by row.  One thread per reference (grid-stride).  Its own frame is searched within
    // radius of it; the frame d away (before: slot 2d - 1, after: slot 2d) within follow of the best
    // match in the frame one nearer (of the reference for d = 1), so the search follows motion.  Each
    // candidate's key is distance * candidates + slot * window + offset index (its offset within a window
    // of radius), unique within a reference; the group - 1 smallest are kept, sorted, in shared memory with
    // their pixels, and the reference heads its group (repeated in order when fewer are found).
    // Twin: nlfilt/collaborative.py ArrayGroups.match_series (and nlfilt/jit_groups.py _match_series).
    extern __shared__ long long nlfilt_series_shared[];
    const int slots_kept = group - 1;
    long long* keys = nlfilt_series_shared;  // [slot][thread]
    int* found_at = (int*)(nlfilt_series_shared + (long long)slots_kept * blockDim.x);  // [slot][thread]
    const long long invalid = 0x7fffffffffffffffLL;
    const int side = 2 * radius + 1, window = side * side, slots = 2 * reach + 1;
    const long long candidates = (long long)slots * window;
    const long long references = (long long)row_count * col_count;
    const long long wide = (long long)frames * width;
    // each thread's sorted keys and their pixels are its own column of the shared arrays: no barrier
    for (long long index = blockIdx.x * (long long)blockDim.x + threadIdx.x; index < references;
         index += (long long)gridDim.x * blockDim.x) {
        const int flat_col = cols[index % col_count], top = rows[index / col_count];
        const int time = flat_col / width, left = flat_col % width;
        for (int slot = 0; slot < slots_kept; ++slot) keys[slot * blockDim.x + threadIdx.x] = invalid;
        int before_row = top, before_col = left, after_row = top, after_col = left;  // the chains' centres
        for (int slot = 0; slot < slots; ++slot) {
            const int away = (slot + 1) / 2;
            const bool after = slot % 2 == 0;
            const int frame = time + (after ? away : -away);
            const int centre_row = after ? after_row : before_row;
            const int centre_col = after ? after_col : before_col;
            const int search = slot == 0 ? radius : follow;
            long long best = invalid;
            int best_row = centre_row, best_col = centre_col;
            if (frame >= 0 && frame < frames) {
                const int* reference = levels + ((long long)time * height + top) * width + left;
                for (int dy = -search; dy <= search; ++dy) {
                    const int row = centre_row + dy;
                    if (row < 0 || row > height - patch) continue;
                    for (int dx = -search; dx <= search; ++dx) {
                        const int col = centre_col + dx;
                        if (col < 0 || col > width - patch) continue;
                        const int* candidate = levels + ((long long)frame * height + row) * width + col;
                        long long distance = 0;
                        for (int u = 0; u < patch; ++u) {
                            for (int v = 0; v < patch; ++v) {
                                const long long difference = reference[u * width + v]
                                                             - candidate[u * width + v];
                                distance += difference * difference;
                            }
                        }
                        const long long key = distance * candidates + (long long)slot * window
                                              + (long long)(dy + radius) * side + dx + radius;
                        if (key < best) {
                            best = key;
                            best_row = row;
                            best_col = col;
                        }
                        if ((slot == 0 && dy == 0 && dx == 0) || slots_kept == 0) continue;  // heads its group
                        int position = slots_kept - 1;
                        if (key >= keys[position * blockDim.x + threadIdx.x]) continue;
                        while (position > 0 && keys[(position - 1) * blockDim.x + threadIdx.x] > key) {
                            const int from = (position - 1) * blockDim.x + threadIdx.x;
                            keys[from + blockDim.x] = keys[from];
                            found_at[from + blockDim.x] = found_at[from];
                            --position;
                        }
                        keys[position * blockDim.x + threadIdx.x] = key;
                        found_at[position * blockDim.x + threadIdx.x] =
                            (int)(row * wide + (long long)frame * width + col);
                    }
                }
            }
            if (slot > 0 && after) {
                after_row = best_row;
                after_col = best_col;
            } else if (slot > 0) {
                before_row = best_row;
                before_col = best_col;
            }
        }
        int* out = members + index * group;
        out[0] = (int)(top * wide + (long long)time * width + left);
        int found = 1;
        for (int slot = 0; slot < slots_kept; ++slot) {
            if (keys[slot * blockDim.x + threadIdx.x] == invalid) break;
            out[found++] = found_at[slot * blockDim.x + threadIdx.x];
        }
        for (int slot = found; slot < group; ++slot) out[slot] = out[slot % found];
    }
}

__device__ void nlfilt_group_gather(const NLFILT_REAL* plane, const int* origins, const int width,
                                    const int patch, const int group, NLFILT_REAL* out) {
    // out[m][j]: the patch at origins[m] (member-major: [member][row * patch + column]), then a barrier
    const int size = patch * patch;
    for (int e = threadIdx.x; e < group * size; e += blockDim.x) {
        const int m = e / size, j = e % size;
        out[e] = plane[origins[m] + (j / patch) * width + j % patch];
    }
    __syncthreads();
}

__device__ void nlfilt_group_separable(const int patch, const int group, const NLFILT_REAL* columns,
                                       const NLFILT_REAL* rows, const NLFILT_REAL* along, NLFILT_REAL* values,
                                       NLFILT_REAL* spare, NLFILT_REAL* out) {
    // out: the group values ([member][row * patch + column]) transformed along each patch's columns by
    // columns (out[.., f] = sum_x columns[f][x] values[.., x]), its rows by rows, and along the group by
    // along (out[g][j] = sum_m along[g][m] values[m][j]); values and spare are overwritten.  A stage's 3-D
    // transform is (F, F, G), its inverse (F^-1, F^-1, G^-1).  Each step is one pass of the block's threads
    // over the group, with a barrier after it.
    const int size = patch * patch, count = group * size;
    for (int e = threadIdx.x; e < count; e += blockDim.x) {  // columns: spare[m][y][f] = sum_x M[f][x] values
        const int base = e - e % patch, f = e % patch;
        NLFILT_REAL total = 0;
        for (int x = 0; x < patch; ++x) total += columns[f * patch + x] * values[base + x];
        spare[e] = total;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < count; e += blockDim.x) {  // rows: values[m][g][f] = sum_y M[g][y] spare
        const int m = e / size, g = (e % size) / patch, f = e % patch;
        NLFILT_REAL total = 0;
        for (int y = 0; y < patch; ++y) total += rows[g * patch + y] * spare[m * size + y * patch + f];
        values[e] = total;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < count; e += blockDim.x) {  // along: out[g][j] = sum_m M[g][m] values[m][j]
        const int g = e / size, j = e % size;
        NLFILT_REAL total = 0;
        for (int m = 0; m < group; ++m) total += along[g * group + m] * values[m * size + j];
        out[e] = total;
    }
    __syncthreads();
}

__device__ NLFILT_REAL nlfilt_block_sum(NLFILT_REAL value, NLFILT_REAL* scratch) {
    // The sum of value over the block's threads (NLFILT_GROUP_THREADS, a multiple of 32), in every thread.
    for (int step = 16; step > 0; step /= 2) value += __shfl_down_sync(0xffffffffu, value, step);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = value;
    __syncthreads();
    NLFILT_REAL total = 0;
    for (int w = 0; w < NLFILT_GROUP_THREADS / 32; ++w) total += scratch[w];
    __syncthreads();
    return total;
}

extern "C" __global__ void nlfilt_bm_filter(const NLFILT_REAL* planes, const NLFILT_REAL* pilots,
                                            const int* members, const NLFILT_REAL* forward_patch,
                                            const NLFILT_REAL* inverse_patch, const NLFILT_REAL* forward_group,
                                            const NLFILT_REAL* inverse_group, const NLFILT_REAL* window,
                                            NLFILT_REAL* numerator, NLFILT_REAL* denominator,
                                            const int references, const int channels, const int pixels,
                                            const int width, const int patch, const int group,
                                            const NLFILT_REAL level, const NLFILT_REAL variance,
                                            const NLFILT_REAL gain_floor, const int hard) {
    // planes, pilots: (channels, pixels); members: (references, group) top-left pixels; forward_*,
    // inverse_*: the stage's transform of a patch side and of the group, and their inverses; numerator:
    // (channels, pixels) and denominator (pixels) receive every group's patches, weighted.  One block of
    // NLFILT_GROUP_THREADS threads per group (grid-stride).  Hard thresholding (hard != 0) keeps the 3-D
    // coefficients of magnitude at least level, and the group's mean; the Wiener stage multiplies each
    // by P^2 / (P^2 + variance), P the pilot's.  The group's weight, 1 / kept or 1 / max(sum of squared
    // gains, gain_floor) over all channels, is found in a first pass over the channels; the second
    // transforms again, shrinks, inverts and adds (atomically) weight * window * value.
    extern __shared__ long long nlfilt_group_shared[];  // long long: aligned for double
    NLFILT_REAL* work = (NLFILT_REAL*)nlfilt_group_shared;
    const int values = group * patch * patch;
    NLFILT_REAL* spare = work + values;
    NLFILT_REAL* held = spare + values;  // the gains (Wiener) or the coefficients (hard)
    NLFILT_REAL* scratch = held + values;
    const int size = patch * patch;
    for (int reference = blockIdx.x; reference < references; reference += gridDim.x) {
        const int* origins = members + (long long)reference * group;
        NLFILT_REAL total = 0;
        for (int channel = 0; channel < channels; ++channel) {  // the weight
            const NLFILT_REAL* plane = (hard ? planes : pilots) + (long long)channel * pixels;
            nlfilt_group_gather(plane, origins, width, patch, group, work);
            nlfilt_group_separable(patch, group, forward_patch, forward_patch, forward_group, work, spare, held);
            for (int e = threadIdx.x; e < values; e += blockDim.x) {
                if (hard) {
                    total += (fabs(held[e]) >= level || e == 0) ? 1 : 0;
                } else {
                    const NLFILT_REAL power = held[e] * held[e], gain = power / (power + variance);
                    total += gain * gain;
                }
            }
        }
        total = nlfilt_block_sum(total, scratch);
        const NLFILT_REAL weight = 1 / (hard ? total : fmax(total, gain_floor));
        for (int channel = 0; channel < channels; ++channel) {
            const long long offset = (long long)channel * pixels;
            if (hard) {
                nlfilt_group_gather(planes + offset, origins, width, patch, group, work);
                nlfilt_group_separable(patch, group, forward_patch, forward_patch, forward_group, work, spare, held);
                for (int e = threadIdx.x; e < values; e += blockDim.x) {
                    if (!(fabs(held[e]) >= level || e == 0)) held[e] = 0;
                }
            } else {
                nlfilt_group_gather(pilots + offset, origins, width, patch, group, work);
                nlfilt_group_separable(patch, group, forward_patch, forward_patch, forward_group, work, spare, held);
                for (int e = threadIdx.x; e < values; e += blockDim.x) {
                    const NLFILT_REAL power = held[e] * held[e];
                    held[e] = power / (power + variance);
                }
                nlfilt_group_gather(planes + offset, origins, width, patch, group, work);
                nlfilt_group_separable(patch, group, forward_patch, forward_patch, forward_group, work, spare, spare);
                for (int e = threadIdx.x; e < values; e += blockDim.x) held[e] *= spare[e];
            }
            __syncthreads();
            nlfilt_group_separable(patch, group, inverse_patch, inverse_patch, inverse_group, held, spare, work);
            for (int e = threadIdx.x; e < values; e += blockDim.x) {
                const int m = e / size, j = e % size;
                const int pixel = origins[m] + (j / patch) * width + j % patch;
                const NLFILT_REAL weighted = weight * window[j];
                atomicAdd(numerator + offset + pixel, weighted * work[e]);
                if (channel == 0) atomicAdd(denominator + pixel, weighted);
            }
            __syncthreads();
        }
    }
}
