// Fused global operator: K V over all pixel pairs in one kernel, never storing K or a tile of it.
// Twin: nlfilt/operators.py GlobalAffinity.matmul (GEMM tiles + the profile + GEMM), for every kernel.
// Exact path: the pair statistic t_ij = left[i] . right[:, j] is accumulated in NLFILT_REAL on CUDA cores.
// NLFILT_REAL is float or double, NLFILT_MAX_COLUMNS the most right-hand-side columns.

// Launch geometry (NLFILT_FUSED_*, NLFILT_BOX_*) comes from nlfilt/cuda/__init__.py as -D options.

// Instantiated as nlfilt_global_fused_<name> for each kernel with a CUDA profile (nlfilt/cuda/__init__.py);
// Kernel::profile(t, depth, floor_value) is that kernel's profile.
template <class Kernel>
__device__ void nlfilt_global_fused_all(const NLFILT_REAL* left_t, const NLFILT_REAL* right,
                                        const NLFILT_REAL* values, NLFILT_REAL* out, const long long size,
                                        const int dims, const int columns, const int depth,
                                        const NLFILT_REAL floor_value) {
    // left_t, right: the kernel's global factors, both (dims, size) C-contiguous (left transposed), so
    //                that t_ij = sum_d left_t[d, i] right[d, j];
    // values, out: (size, columns) C-contiguous; out[i] = sum_j f(t_ij) values[j].
    // Each block owns NLFILT_FUSED_QUERIES query rows (one per thread, grid-stride over row blocks) and
    // streams the keys through shared memory in tiles of NLFILT_FUSED_KEYS keys, the factors in chunks
    // of NLFILT_FUSED_DIMS dimensions; the Gram block, the profile and K V stay in registers.
    __shared__ NLFILT_REAL keys[NLFILT_FUSED_DIMS][NLFILT_FUSED_KEYS];
    __shared__ NLFILT_REAL key_values[NLFILT_FUSED_KEYS][NLFILT_MAX_COLUMNS];
    const int lane = threadIdx.x;
    for (long long first = (long long)blockIdx.x * NLFILT_FUSED_QUERIES; first < size;
         first += (long long)gridDim.x * NLFILT_FUSED_QUERIES) {
        const long long query = first + lane;
        const bool active = query < size;
        // total[] and gram[] are indexed by compile-time constants only (unrolled loops, guarded), so they
        // stay in registers instead of local memory
        NLFILT_REAL total[NLFILT_MAX_COLUMNS];
#pragma unroll
        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) total[m] = 0;
        for (long long key_first = 0; key_first < size; key_first += NLFILT_FUSED_KEYS) {
            NLFILT_REAL gram[NLFILT_FUSED_KEYS];
#pragma unroll
            for (int k = 0; k < NLFILT_FUSED_KEYS; ++k) gram[k] = 0;
            for (int dim_first = 0; dim_first < dims; dim_first += NLFILT_FUSED_DIMS) {
                __syncthreads();  // the previous chunk is no longer read
                for (int e = lane; e < NLFILT_FUSED_DIMS * NLFILT_FUSED_KEYS; e += NLFILT_FUSED_QUERIES) {
                    const int d = e / NLFILT_FUSED_KEYS, k = e % NLFILT_FUSED_KEYS;
                    const long long key = key_first + k;
                    keys[d][k] = (dim_first + d < dims && key < size)
                                     ? right[(long long)(dim_first + d) * size + key] : (NLFILT_REAL)0;
                }
                __syncthreads();
                if (active) {
                    const int chunk = min(NLFILT_FUSED_DIMS, dims - dim_first);
                    for (int d = 0; d < chunk; ++d) {
                        const NLFILT_REAL a = left_t[(long long)(dim_first + d) * size + query];
#pragma unroll
                        for (int k = 0; k < NLFILT_FUSED_KEYS; ++k) gram[k] += a * keys[d][k];
                    }
                }
            }
            __syncthreads();  // key_values is no longer read
            for (int e = lane; e < NLFILT_FUSED_KEYS * NLFILT_MAX_COLUMNS; e += NLFILT_FUSED_QUERIES) {
                const int k = e / NLFILT_MAX_COLUMNS, m = e % NLFILT_MAX_COLUMNS;
                const long long key = key_first + k;
                key_values[k][m] = (key < size && m < columns) ? values[key * columns + m] : (NLFILT_REAL)0;
            }
            __syncthreads();
            if (active) {
                const int count = (int)min((long long)NLFILT_FUSED_KEYS, size - key_first);
#pragma unroll
                for (int k = 0; k < NLFILT_FUSED_KEYS; ++k) {
                    if (k < count) {
                        const NLFILT_REAL weight = Kernel::profile(gram[k], depth, floor_value);
#pragma unroll
                        for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) total[m] += weight * key_values[k][m];
                    }
                }
            }
        }
        if (active) {
#pragma unroll
            for (int m = 0; m < NLFILT_MAX_COLUMNS; ++m) {
                if (m < columns) out[query * columns + m] = total[m];
            }
        }
        __syncthreads();
    }
}
