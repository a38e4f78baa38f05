// Kernel profiles f(t), applied in place to a tile of pair statistics t (the global mode's GEMM tiles).
// Each registered kernel with a CUDA profile brings the body of its profile (nlfilt/kernels.py,
// Kernel.cuda_profile); nlfilt/cuda/__init__.py wraps it in a struct nlfilt_kernel_<name> and
// instantiates nlfilt_profile_<name> (below) and nlfilt_global_fused_<name> (fused.cu) for it.
// Twins: the kernels' NumPy profiles (Kernel.profile).  NLFILT_REAL is float or double.

// One ReLU layer on a cosine c in [-1, 1]: returns c' = (sin phi + (pi - phi) c) / pi and
// writes the derivative kernel (pi - phi) / pi, phi = arccos c.  sin phi = sqrt((1 - c)(1 + c)) for phi in
// [0, pi]: no sin() call, whose slow argument reduction for large arguments would put an array in local
// memory (the product form keeps the digits near c = +-1 that 1 - c * c would lose).
__device__ NLFILT_REAL nlfilt_relu_layer(const NLFILT_REAL c, NLFILT_REAL* derivative) {
    const NLFILT_REAL pi = (NLFILT_REAL)3.141592653589793238462643383279502884;
    const NLFILT_REAL phi = acos(c);
    const NLFILT_REAL sine = sqrt(((NLFILT_REAL)1 - c) * ((NLFILT_REAL)1 + c));
    *derivative = (pi - phi) / pi;
    return (sine + (pi - phi) * c) / pi;
}

__device__ NLFILT_REAL nlfilt_clip_cosine(const NLFILT_REAL c) {
    return c < (NLFILT_REAL)-1 ? (NLFILT_REAL)-1 : (c > (NLFILT_REAL)1 ? (NLFILT_REAL)1 : c);
}

// t[i] <- Kernel::profile(t[i], depth, floor_value) for i < size (grid-stride loop).
template <class Kernel>
__device__ void nlfilt_profile_all(NLFILT_REAL* t, const long long size, const int depth,
                                   const NLFILT_REAL floor_value) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        t[i] = Kernel::profile(t[i], depth, floor_value);
    }
}
