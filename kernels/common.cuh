#pragma once
// What every kernels/*.cu file shares: error checks, the stream and cuBLAS handle, scratch
// memory, launch shapes, block reductions, the activation functions, and the deterministic
// column reduction. Internal to rechub::cuda (it needs the CUDA headers; users never see it).
//
// Determinism: no float atomics outside the opt-in Scatter::atomic path. Every reduction has a
// fixed shape for given sizes (block sizes and chunk counts depend only on the sizes), so a
// kernel run twice on the same input gives the same bits.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "rechub/core/error.hpp"
#include "rechub/cuda/cuda.hpp"

namespace rechub::cuda::detail {

[[noreturn]] void throw_cuda(const char* what, cudaError_t e, const char* file, int line);
[[noreturn]] void throw_cublas(const char* what, cublasStatus_t s, const char* file, int line);
/// The backend's stream and cuBLAS handle (initialising the runtime on first use).
cudaStream_t cur_stream();
cublasHandle_t cublas();
/// Device floats 0 and 1, for cuBLAS calls whose alpha lives on the device.
const float* device_zero();
const float* device_one();
/// gemm with alpha and beta read from device memory (the scale of a loss backward is dloss / n).
void gemm_device_scalars(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                         const float* alpha, const float* A, std::int64_t lda, const float* B, std::int64_t ldb,
                         const float* beta, float* C, std::int64_t ldc);

#define RECHUB_CUDA_CHECK(call)                                                                 \
  do {                                                                                          \
    const cudaError_t rechub_e_ = (call);                                                       \
    if (rechub_e_ != cudaSuccess) ::rechub::cuda::detail::throw_cuda(#call, rechub_e_, __FILE__, __LINE__); \
  } while (0)
#define RECHUB_CUBLAS_CHECK(call)                                                                   \
  do {                                                                                              \
    const cublasStatus_t rechub_s_ = (call);                                                        \
    if (rechub_s_ != CUBLAS_STATUS_SUCCESS) ::rechub::cuda::detail::throw_cublas(#call, rechub_s_, __FILE__, __LINE__); \
  } while (0)
/// After a launch: reports a bad configuration now (execution errors surface at the next sync).
#define RECHUB_CUDA_LAUNCHED(kernel_name)                                                          \
  do {                                                                                             \
    const cudaError_t rechub_e_ = cudaGetLastError();                                              \
    if (rechub_e_ != cudaSuccess) ::rechub::cuda::detail::throw_cuda(kernel_name, rechub_e_, __FILE__, __LINE__); \
  } while (0)

/// Device scratch from the caching allocator, given back at scope end. Safe without a sync: the
/// block is reused only by work enqueued later on the same stream.
class Scratch {
 public:
  explicit Scratch(std::size_t bytes) : p_(bytes ? device_alloc(bytes) : nullptr) {}
  ~Scratch() {
    if (p_) device_free(p_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_;
};

constexpr int kThreads = 256;
/// Blocks for a grid-stride loop over n items (capped: each thread then loops).
inline unsigned grid_for(std::int64_t n, int threads = kThreads) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}
/// Blocks for one block per row (grid-stride over rows beyond the cap).
inline unsigned grid_rows(std::int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > 65536 ? 65536 : rows));
}
/// Threads for one block per row of `len` elements: a warp for short rows, up to 256 for long ones.
inline int row_threads(std::int64_t len) {
  if (len <= 64) return 32;
  if (len <= 256) return 64;
  if (len <= 1024) return 128;
  return 256;
}

#define RECHUB_GRID_STRIDE(i, n)                                                                           \
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);           \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

// ---- warp / block reductions (blockDim.x a multiple of 32, at most 1024) -----------------------
// The xor butterfly leaves the same bits in every lane (IEEE addition is commutative), so every
// thread of the block returns the identical total.

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
/// Sum over the block; sh is __shared__ scratch of 32 T. Every thread must call it.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();  // an earlier call may still be reading sh
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T r = lane < nw ? sh[lane] : T(0);
  return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* sh) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : -INFINITY;
  return warp_max(r);
}

// ---- activations (the CPU's detail::act_value / act_grad, ops/activation.hpp) ------------------

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float act_value(Act k, float z, float a) {
  switch (k) {
    case Act::relu:
      return fmaxf(z, 0.0f);
    case Act::prelu:
      return fmaxf(z, 0.0f) + a * fminf(z, 0.0f);
    case Act::sigmoid:
      return sigmoidf_(z);
    case Act::tanh:
      return tanhf(z);
    default:
      return z;
  }
}
/// g act'(z) given z and y = act(z); at z = 0 the derivative is taken from the left, like torch.
__device__ __forceinline__ float act_grad(Act k, float g, float z, float y, float a) {
  switch (k) {
    case Act::relu:
      return z > 0.0f ? g : 0.0f;
    case Act::prelu:
      return z > 0.0f ? g : g * a;
    case Act::sigmoid:
      return g * y * (1.0f - y);
    case Act::tanh:
      return g * (1.0f - y * y);
    default:
      return g;
  }
}

// ---- deterministic column reduction ------------------------------------------------------------
// sums[o][c] = sum over rows r of f(r, c)[o], for a [rows, C] iteration space. A block covers 32
// columns x 8 row lanes of one row chunk; lanes combine in shared memory in a fixed order, chunks
// combine in a second kernel in chunk order. f may also write per-element outputs (dx): every
// (r, c) is visited exactly once.

constexpr int kColX = 32, kColY = 8;

inline std::int64_t col_chunks(std::int64_t rows) {
  std::int64_t c = rows / 1024;
  return c < 1 ? 1 : (c > 128 ? 128 : c);
}

template <int NOut, class F>
__global__ void col_reduce_kernel(float* partial, F f, std::int64_t rows, std::int64_t C, std::int64_t chunk_rows) {
  __shared__ float sh[NOut][kColY][kColX];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColX + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * chunk_rows;
  const std::int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  float acc[NOut];
  for (int o = 0; o < NOut; ++o) acc[o] = 0.0f;
  if (c < C)
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kColY) f(r, c, acc);
  for (int o = 0; o < NOut; ++o) sh[o][threadIdx.y][threadIdx.x] = acc[o];
  __syncthreads();
  if (threadIdx.y == 0 && c < C)
    for (int o = 0; o < NOut; ++o) {
      float s = 0.0f;
      for (int y = 0; y < kColY; ++y) s += sh[o][y][threadIdx.x];
      partial[(static_cast<std::int64_t>(blockIdx.y) * NOut + o) * C + c] = s;
    }
}

/// dst[o][c] (+)= (sum over chunks of partial) / div; dst[o] may be null.
struct ColDst {
  float* p[4];
};
template <int NOut>
__global__ void col_finish_kernel(ColDst dst, const float* partial, std::int64_t chunks, std::int64_t C, bool accumulate,
                                  float div) {
  RECHUB_GRID_STRIDE(c, C) {
    for (int o = 0; o < NOut; ++o) {
      if (!dst.p[o]) continue;
      float s = 0.0f;
      for (std::int64_t k = 0; k < chunks; ++k) s += partial[(k * NOut + o) * C + c];
      if (div != 1.0f) s = s / div;
      dst.p[o][c] = accumulate ? dst.p[o][c] + s : s;
    }
  }
}

/// Runs the column reduction of f over [rows, C] into dst (accumulate: +=, else =; then / div).
template <int NOut, class F>
void col_reduce(F f, std::int64_t rows, std::int64_t C, ColDst dst, bool accumulate, float div = 1.0f) {
  static_assert(NOut >= 1 && NOut <= 4, "col_reduce: 1 to 4 outputs");
  if (C <= 0) return;
  if (rows <= 0) {
    if (!accumulate)
      for (int o = 0; o < NOut; ++o)
        if (dst.p[o]) RECHUB_CUDA_CHECK(cudaMemsetAsync(dst.p[o], 0, C * sizeof(float), cur_stream()));
    return;
  }
  const std::int64_t chunks = col_chunks(rows), chunk_rows = (rows + chunks - 1) / chunks;
  Scratch partial(static_cast<std::size_t>(chunks * NOut * C) * sizeof(float));
  const dim3 grid(static_cast<unsigned>((C + kColX - 1) / kColX), static_cast<unsigned>(chunks));
  col_reduce_kernel<NOut, F><<<grid, dim3(kColX, kColY), 0, cur_stream()>>>(partial.as<float>(), f, rows, C, chunk_rows);
  RECHUB_CUDA_LAUNCHED("col_reduce_kernel");
  col_finish_kernel<NOut><<<grid_for(C), kThreads, 0, cur_stream()>>>(dst, partial.as<float>(), chunks, C, accumulate,
                                                                        div);
  RECHUB_CUDA_LAUNCHED("col_finish_kernel");
}

/// Fills rechub::detail::cuda_hooks() with the Var-level ops (kernels/dispatch.cpp).
void register_hooks();

/// dst[0] += sum of v[0, n) (one block, fixed order): the total of a per-column slope gradient.
void add_total(float* dst, const float* v, std::int64_t n);
/// dst[0..n) += v[0..n).
void add_vector(float* dst, const float* v, std::int64_t n);

}  // namespace rechub::cuda::detail
