// The global operator K V on tensor cores, in the FlashAttention scheme: tiles of 64 query rows against
// tiles of 64 keys, the pair statistic t_ij = left[i] . right_t[j] and the products with the values by
// warp-level TF32 matrix products (mma.sync m16n8k8) in three passes (3xTF32: a = a_hi + a_lo, and
// a b ~ a_hi b_hi + a_hi b_lo + a_lo b_hi, float32 accuracy), the profile in registers; K is never stored.
// Twin: nlfilt/operators.py GlobalAffinity.matmul (float32).  Needs compute capability 8.0 (the body is
// empty below it; the operator is chosen only on such devices).
// Launch geometry (NLFILT_MMA_*) comes from nlfilt/cuda/__init__.py as -D options.

__device__ __forceinline__ unsigned int nlfilt_tf32(const float value) {
    unsigned int bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(value));
    return bits;
}

__device__ __forceinline__ void nlfilt_split(const float value, unsigned int& high, unsigned int& low) {
    // value = high + low, each a TF32 number (low: the rounding error of high, itself rounded)
    high = nlfilt_tf32(value);
    low = nlfilt_tf32(value - __uint_as_float(high));
}

__device__ __forceinline__ void nlfilt_mma(float* accumulator, const unsigned int* a, const unsigned int* b) {
    // accumulator (16 x 8, this thread's four) += A (16 x 8) B (8 x 8), TF32 inputs, float32 accumulation
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(accumulator[0]), "+f"(accumulator[1]), "+f"(accumulator[2]), "+f"(accumulator[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

struct nlfilt_split_a {
    // this thread's four values of a 16 x 8 A block (rows g, g + 8; columns t, t + 4), split in two
    unsigned int high[4], low[4];
    __device__ __forceinline__ nlfilt_split_a(const float a0, const float a1, const float a2, const float a3) {
        nlfilt_split(a0, high[0], low[0]);
        nlfilt_split(a1, high[1], low[1]);
        nlfilt_split(a2, high[2], low[2]);
        nlfilt_split(a3, high[3], low[3]);
    }
};

__device__ __forceinline__ void nlfilt_mma3(float* accumulator, const nlfilt_split_a& a, const float b0,
                                            const float b1) {
    // accumulator += A B in 3xTF32 (the small products first); b0, b1: this thread's two values of the
    // 8 x 8 B block (rows t, t + 4; column g)
    unsigned int b_high[2], b_low[2];
    nlfilt_split(b0, b_high[0], b_low[0]);
    nlfilt_split(b1, b_high[1], b_low[1]);
    nlfilt_mma(accumulator, a.low, b_high);
    nlfilt_mma(accumulator, a.high, b_low);
    nlfilt_mma(accumulator, a.high, b_high);
}

// Instantiated as nlfilt_global_mma_<name> for each kernel with a CUDA profile (nlfilt/cuda/__init__.py).
template <class Kernel>
__device__ void nlfilt_global_mma_all(const float* left, const float* right_t, const float* values, float* out,
                                      const int* work, const int items, const int size, const int dims,
                                      const int columns, const int depth, const float floor_value) {
    // left, right_t: (size, dims) row-major factors, t_ij = sum_d left[i, d] right_t[j, d]; values, out:
    // (size, columns) row-major, columns <= 8; out must be zero before the launch (every term is added
    // atomically).  K is symmetric: work lists (query tile I, first key tile J0) pairs with J0 >= I; a
    // block takes the key tiles J0 .. J0 + NLFILT_MMA_CHUNK - 1 (below the last), and for J > I adds
    // both K_IJ V_J into the query rows and K_IJ^T V_I into the keys (the diagonal tile only the first).
    // Warp w owns query rows 16 w .. 16 w + 15 of the tile; per key tile it accumulates its 16 x 64 block
    // of t in registers (factors streamed through shared memory NLFILT_MMA_DIMS dimensions at a time),
    // applies the profile, and stages the weights in shared memory for the two products.
#if __CUDA_ARCH__ >= 800
    __shared__ float queries[NLFILT_MMA_TILE][NLFILT_MMA_DIMS + 4];
    __shared__ float keys[NLFILT_MMA_TILE][NLFILT_MMA_DIMS + 4];
    __shared__ float weights[NLFILT_MMA_TILE / 16][16][NLFILT_MMA_TILE + 4];  // one block per warp
    __shared__ float query_values[NLFILT_MMA_TILE][8];
    __shared__ float key_values[NLFILT_MMA_TILE][8];
    __shared__ float mirrored[NLFILT_MMA_TILE][8];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;  // the fragments' row group and thread in group
    const int tiles = (size + NLFILT_MMA_TILE - 1) / NLFILT_MMA_TILE;
    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const int query_tile = work[2 * item], first_key_tile = work[2 * item + 1];
        const int query_first = query_tile * NLFILT_MMA_TILE;
        __syncthreads();  // the shared arrays of the previous item are no longer read
        for (int e = threadIdx.x; e < NLFILT_MMA_TILE * 8; e += blockDim.x) {
            const int row = e / 8, column = e % 8, query = query_first + row;
            query_values[row][column] = (query < size && column < columns) ? values[(long long)query * columns + column]
                                                                         : 0.0f;
            mirrored[row][column] = 0.0f;
        }
        float direct[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // K_IJ V_J: rows g, g + 8; columns 2 t, 2 t + 1
        const int last_key_tile = min(first_key_tile + NLFILT_MMA_CHUNK, tiles);
        for (int key_tile = first_key_tile; key_tile < last_key_tile; ++key_tile) {
            const int key_first = key_tile * NLFILT_MMA_TILE;
            float statistic[NLFILT_MMA_TILE / 8][4];
#pragma unroll
            for (int n = 0; n < NLFILT_MMA_TILE / 8; ++n) {
#pragma unroll
                for (int q = 0; q < 4; ++q) statistic[n][q] = 0.0f;
            }
            for (int dim_first = 0; dim_first < dims; dim_first += NLFILT_MMA_DIMS) {
                __syncthreads();  // the previous chunk is no longer read
                for (int e = threadIdx.x; e < NLFILT_MMA_TILE * NLFILT_MMA_DIMS; e += blockDim.x) {
                    const int row = e / NLFILT_MMA_DIMS, d = e % NLFILT_MMA_DIMS, dim = dim_first + d;
                    const int query = query_first + row, key = key_first + row;
                    queries[row][d] = (query < size && dim < dims) ? left[(long long)query * dims + dim] : 0.0f;
                    keys[row][d] = (key < size && dim < dims) ? right_t[(long long)key * dims + dim] : 0.0f;
                }
                __syncthreads();
#pragma unroll
                for (int k = 0; k < NLFILT_MMA_DIMS; k += 8) {
                    const int row = 16 * warp + g;
                    const nlfilt_split_a a(queries[row][k + t], queries[row + 8][k + t], queries[row][k + t + 4],
                                           queries[row + 8][k + t + 4]);
#pragma unroll
                    for (int n = 0; n < NLFILT_MMA_TILE / 8; ++n) {
                        nlfilt_mma3(statistic[n], a, keys[8 * n + g][k + t], keys[8 * n + g][k + t + 4]);
                    }
                }
            }
            // the profile, zero outside the image, staged for the products
#pragma unroll
            for (int n = 0; n < NLFILT_MMA_TILE / 8; ++n) {
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const int row = g + 8 * (q / 2), column = 8 * n + 2 * t + q % 2;
                    const bool inside = query_first + 16 * warp + row < size && key_first + column < size;
                    weights[warp][row][column] = inside ? Kernel::profile(statistic[n][q], depth, floor_value)
                                                        : 0.0f;
                }
            }
            for (int e = threadIdx.x; e < NLFILT_MMA_TILE * 8; e += blockDim.x) {
                const int row = e / 8, column = e % 8, key = key_first + row;
                key_values[row][column] = (key < size && column < columns) ? values[(long long)key * columns + column]
                                                                           : 0.0f;
            }
            __syncthreads();
            // K_IJ V_J into the warp's query rows
#pragma unroll
            for (int k = 0; k < NLFILT_MMA_TILE; k += 8) {
                const nlfilt_split_a a(weights[warp][g][k + t], weights[warp][g + 8][k + t],
                                       weights[warp][g][k + t + 4], weights[warp][g + 8][k + t + 4]);
                nlfilt_mma3(direct, a, key_values[k + t][g], key_values[k + t + 4][g]);
            }
            if (key_tile != query_tile) {
                // K_IJ^T V_I: the warp's 16 query rows against the tile's keys, 16 keys at a time
#pragma unroll
                for (int m = 0; m < NLFILT_MMA_TILE; m += 16) {
                    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int k = 0; k < 16; k += 8) {
                        const nlfilt_split_a a(weights[warp][k + t][m + g], weights[warp][k + t][m + g + 8],
                                               weights[warp][k + t + 4][m + g], weights[warp][k + t + 4][m + g + 8]);
                        nlfilt_mma3(part, a, query_values[16 * warp + k + t][g],
                                    query_values[16 * warp + k + t + 4][g]);
                    }
#pragma unroll
                    for (int q = 0; q < 4; ++q) atomicAdd(&mirrored[m + g + 8 * (q / 2)][2 * t + q % 2], part[q]);
                }
                __syncthreads();
                for (int e = threadIdx.x; e < NLFILT_MMA_TILE * 8; e += blockDim.x) {
                    const int row = e / 8, column = e % 8, key = key_first + row;
                    if (key < size && column < columns) atomicAdd(out + (long long)key * columns + column,
                                                                 mirrored[row][column]);
                    mirrored[row][column] = 0.0f;
                }
            }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int query = query_first + 16 * warp + g + 8 * (q / 2), column = 2 * t + q % 2;
            if (query < size && column < columns) atomicAdd(out + (long long)query * columns + column, direct[q]);
        }
    }
#endif
}
