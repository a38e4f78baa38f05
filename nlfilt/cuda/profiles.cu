// Elementwise kernel profiles applied in place to a tile of pair statistics t.
// Twins: nlfilt/kernels.py (NLMKernel.profile, ArcCosKernel.profile, NTKKernel.profile).
// NLFILT_REAL is float or double (set at compile time).

extern "C" __global__ void nlfilt_profile_nlm(NLFILT_REAL* t, const long long size,
                                              const NLFILT_REAL floor_value) {
    // f(t) = exp(min(t, 0)), t first raised to floor_value (log of the smallest normal number)
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        NLFILT_REAL value = t[i];
        value = value < floor_value ? floor_value : value;
        value = value > (NLFILT_REAL)0 ? (NLFILT_REAL)0 : value;
        t[i] = exp(value);
    }
}

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

extern "C" __global__ void nlfilt_profile_arccos(NLFILT_REAL* t, const long long size) {
    // f(c) = (sin phi + (pi - phi) cos phi) / pi
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        NLFILT_REAL derivative;
        t[i] = nlfilt_relu_layer(nlfilt_clip_cosine(t[i]), &derivative);
    }
}

extern "C" __global__ void nlfilt_profile_ntk(NLFILT_REAL* t, const long long size, const int depth) {
    // theta^0 = c^0; per layer: theta^l = c^l + theta^{l-1} (pi - phi^{l-1}) / pi
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        NLFILT_REAL c = nlfilt_clip_cosine(t[i]);
        NLFILT_REAL theta = c;
        for (int layer = 0; layer < depth; ++layer) {
            NLFILT_REAL derivative;
            c = nlfilt_relu_layer(c, &derivative);
            theta = c + theta * derivative;
        }
        t[i] = theta;
    }
}
