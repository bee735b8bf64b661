// Block top-k per row, and retrieval = cuBLAS scores + top-k. CPU reference: ops/topk.hpp
// (descending, ties to the lower index, NaN ranked with -inf).
//
// One block per row, three phases, O(M) reads per phase and no sort of the whole row:
//   1. radix select: each float maps to an order-preserving 32-bit key; four 8-bit histogram
//      passes find the key T of the k-th largest entry, and how many entries equal to T are
//      needed (the rest of the k are strictly greater);
//   2. compaction: every entry with key > T, and the first needed entries with key == T in index
//      order (a block-wide ordered count), go to shared memory;
//   3. a bitonic sort of those k candidates by (key descending, index ascending).
// k is limited by shared memory (kTopkMaxK candidates of 8 bytes, padded to a power of two).
#include <algorithm>
#include <climits>

#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;

constexpr int kTopkThreads = 256;

/// Order-preserving key: a > b as floats <=> key(a) > key(b); NaN maps to -inf's key and -0 to
/// +0's (the CPU ranks both pairs as equal, then by index).
__device__ __forceinline__ std::uint32_t topk_key(float f) {
  if (isnan(f)) f = -INFINITY;
  if (f == 0.0f) f = 0.0f;
  const std::uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
/// (ka, ia) ranks before (kb, ib).
__device__ __forceinline__ bool ranks_before(std::uint32_t ka, std::int32_t ia, std::uint32_t kb, std::int32_t ib) {
  return ka > kb || (ka == kb && ia < ib);
}

__global__ void topk_kernel(float* values, std::int32_t* indices, const float* scores, std::int64_t N, std::int64_t M,
                            int k, int kpow2) {
  extern __shared__ unsigned char smem[];
  std::uint32_t* ckey = reinterpret_cast<std::uint32_t*>(smem);
  std::int32_t* cidx = reinterpret_cast<std::int32_t*>(ckey + kpow2);
  __shared__ std::uint32_t hist[256];
  __shared__ std::uint32_t s_prefix;
  __shared__ int s_need;
  __shared__ int s_gt;
  __shared__ int warp_count[kTopkThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;

  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const float* x = scores + row * M;

    // 1. radix select of the k-th largest key, 8 bits at a time from the top.
    std::uint32_t prefix = 0, mask = 0;
    int need = k;  // how many of the entries matching prefix still have to be taken
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
      __syncthreads();
      for (std::int64_t j = tid; j < M; j += blockDim.x) {
        const std::uint32_t key = topk_key(x[j]);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        std::uint32_t above = 0;
        int b = 255;
        for (; b > 0; --b) {
          if (above + hist[b] >= static_cast<std::uint32_t>(need)) break;
          above += hist[b];
        }
        s_prefix = prefix | (static_cast<std::uint32_t>(b) << shift);
        s_need = need - static_cast<int>(above);
      }
      __syncthreads();
      prefix = s_prefix;
      need = s_need;
      mask |= 0xFFu << shift;
    }
    const std::uint32_t T = prefix;  // entries > T: k - need of them; entries == T: take the first `need`

    // 2. ordered compaction: > T to slots [0, k - need), the first `need` == T to [k - need, k).
    if (tid == 0) s_gt = 0;
    __syncthreads();
    int eq_seen = 0;  // entries == T in earlier tiles (uniform across the block)
    for (std::int64_t base = 0; base < M; base += blockDim.x) {
      const std::int64_t j = base + tid;
      const std::uint32_t key = j < M ? topk_key(x[j]) : 0u;
      const bool gt = j < M && key > T, eq = j < M && key == T;
      const unsigned ballot = __ballot_sync(0xffffffffu, eq);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int before = __popc(ballot & ((1u << lane) - 1u)), tile_eq = 0;
      for (int w = 0; w < nwarps; ++w) {
        if (w < warp) before += warp_count[w];
        tile_eq += warp_count[w];
      }
      if (gt) {
        const int slot = atomicAdd(&s_gt, 1);
        ckey[slot] = key;
        cidx[slot] = static_cast<std::int32_t>(j);
      } else if (eq && eq_seen + before < need) {
        const int slot = k - need + eq_seen + before;
        ckey[slot] = key;
        cidx[slot] = static_cast<std::int32_t>(j);
      }
      eq_seen += tile_eq;
      __syncthreads();  // warp_count is rewritten by the next tile
    }
    for (int t = k + tid; t < kpow2; t += blockDim.x) {  // padding ranks after every real entry
      ckey[t] = 0u;
      cidx[t] = INT_MAX;
    }

    // 3. bitonic sort of the candidates, best first.
    for (int size = 2; size <= kpow2; size <<= 1)
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        __syncthreads();
        for (int t = tid; t < kpow2 / 2; t += blockDim.x) {
          const int i = 2 * t - (t & (stride - 1)), o = i + stride;
          const bool best_first = (i & size) == 0;
          const bool swap = best_first ? ranks_before(ckey[o], cidx[o], ckey[i], cidx[i])
                                       : ranks_before(ckey[i], cidx[i], ckey[o], cidx[o]);
          if (swap) {
            const std::uint32_t tk = ckey[i];
            ckey[i] = ckey[o];
            ckey[o] = tk;
            const std::int32_t ti = cidx[i];
            cidx[i] = cidx[o];
            cidx[o] = ti;
          }
        }
      }
    __syncthreads();
    for (int t = tid; t < k; t += blockDim.x) {
      const std::int32_t j = cidx[t];
      indices[row * k + t] = j;
      values[row * k + t] = x[j];
    }
    __syncthreads();  // the next row reuses the candidate buffer
  }
}
}  // namespace

void topk(float* values, std::int32_t* indices, const float* scores, std::int64_t N, std::int64_t M, std::int64_t k) {
  RECHUB_CHECK_SHAPE(k >= 0 && k <= M, "cuda::topk: k = ", k, " must lie in [0, ", M, "]");
  RECHUB_CHECK_SHAPE(M <= INT_MAX, "cuda::topk: ", M, " columns exceed int32 indices");
  RECHUB_CHECK_AS(CudaError, k <= kTopkMaxK, "cuda::topk: k = ", k, " exceeds the CUDA top-k limit of ", kTopkMaxK);
  if (N <= 0 || k == 0) return;
  int kpow2 = 1;
  while (kpow2 < k) kpow2 <<= 1;
  const std::size_t smem = static_cast<std::size_t>(kpow2) * (sizeof(std::uint32_t) + sizeof(std::int32_t));
  topk_kernel<<<detail::grid_rows(N), kTopkThreads, smem, cur_stream()>>>(values, indices, scores, N, M,
                                                                          static_cast<int>(k), kpow2);
  RECHUB_CUDA_LAUNCHED("topk_kernel");
}

void score_topk(float* values, std::int32_t* indices, const float* queries, const float* items, std::int64_t N,
                std::int64_t M, std::int64_t D, std::int64_t k) {
  RECHUB_CHECK_SHAPE(k >= 0 && k <= M, "cuda::score_topk: k = ", k, " must lie in [0, ", M, "]");
  if (N <= 0 || k == 0) return;
  constexpr std::int64_t kChunkFloats = std::int64_t(64) << 20;  // 256 MiB of scores at a time
  const std::int64_t chunk = std::max<std::int64_t>(1, std::min<std::int64_t>(N, kChunkFloats / M));
  detail::Scratch S(static_cast<std::size_t>(chunk * M) * sizeof(float));
  for (std::int64_t r0 = 0; r0 < N; r0 += chunk) {
    const std::int64_t n = std::min(chunk, N - r0);
    gemm(false, true, n, M, D, 1.0f, queries + r0 * D, D, items, D, 0.0f, S.as<float>(), M);
    topk(values + r0 * k, indices + r0 * k, S.as<float>(), n, M, k);
  }
}

}  // namespace rechub::cuda
