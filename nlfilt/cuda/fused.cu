// Fused global operator: K V over all pixel pairs in one kernel, never storing K or a tile of it.
// Twin: nlfilt/operators.py GlobalAffinity.matmul (GEMM tiles + nlfilt_profile_* + GEMM), for every kernel.
// Exact path: the pair statistic t_ij = left[i] . right[:, j] is accumulated in NLFILT_REAL on CUDA cores.
// NLFILT_REAL is float or double, NLFILT_MAX_COLUMNS the most right-hand-side columns.

// Launch geometry (NLFILT_FUSED_*, NLFILT_BOX_*) comes from nlfilt/cuda/__init__.py as -D options.

// The kernel profile f(t) of kind 0 (NLM: exp(clip(t, floor, 0))), 1 (arc-cosine) or 2 (NTK of `depth`
// layers); t is a cosine for kinds 1 and 2.  Same formulas as profiles.cu.
__device__ NLFILT_REAL nlfilt_fused_profile(NLFILT_REAL t, const int kind, const int depth,
                                            const NLFILT_REAL floor_value) {
    if (kind == 0) {
        t = t < floor_value ? floor_value : t;
        t = t > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : t;
        return exp(t);
    }
    NLFILT_REAL c = nlfilt_clip_cosine(t);
    NLFILT_REAL derivative;
    if (kind == 1) return nlfilt_relu_layer(c, &derivative);
    NLFILT_REAL theta = c;
    for (int layer = 0; layer < depth; ++layer) {
        c = nlfilt_relu_layer(c, &derivative);
        theta = c + theta * derivative;
    }
    return theta;
}

extern "C" __global__ void nlfilt_global_fused(const NLFILT_REAL* left_t, const NLFILT_REAL* right,
                                               const NLFILT_REAL* values, NLFILT_REAL* out,
                                               const long long size, const int dims, const int columns,
                                               const int kind, const int depth,
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
                        const NLFILT_REAL weight = nlfilt_fused_profile(gram[k], kind, depth, floor_value);
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
