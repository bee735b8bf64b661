#pragma once
// An AVX2 + FMA GEMM for the shape that dominates training: a tall row-major C [M, N] (+)=
// alpha A op(B), A row-major [M, K] (a batch of activations or output gradients) and op(B) a
// layer's weight (N * K small, N a multiple of 8).
//
// op(B) is packed once into panels of 16 columns (K rows of 16 floats; a last panel of 8 when
// N % 16 == 8). C is computed in tiles of rows; a fresh C (bias or zeros) is written by the kernel
// itself, never filled first (Store). The kernel takes 6 rows of A as they lie in memory (no
// packing: a row's K floats are contiguous) and one panel, and keeps the
// 6 x 16 block of C in 12 registers for the whole K loop: per k, 2 loads of the panel, 6
// broadcasts of A and 12 FMAs. On this machine's Zen 2 cores, timed alone on one thread, it ran
// the DSSM tower's forward shapes 30-45% faster than Eigen's kernel (which packs A first and keeps
// a 24 x 4 block); bench_ops' linear fwd+bwd at batch 4096 went from ~104 to ~128 GFLOP/s.
//
// The weight gradient dZ^T X (A stored transposed, depth = the batch) runs the same kernel over
// blocks of up to 256 k with both operands packed (gemm_trans_a): reading 6 neighbouring floats of
// dZ in place per k (a cache line each, from L2) made a DSSM epoch 6% slower than Eigen. On several
// threads the depth blocks are shared out (gemm_trans_a_split in ops/gemm.hpp).
//
// Each element of C is its own sum over k in order (one FMA chain from zero, per depth block for
// the weight gradient), added to C (to the bias or 0 when C is fresh): the result does not depend
// on tiles, threads or where the row falls in a 6-row block.
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RECHUB_AVX2_GEMM 1

namespace rechub::detail::avx2 {

/// Whether gemm_rows below takes the product: op(B) of whole 8-column panels, small enough that a
/// panel (K x 16) and 6 rows of A (6 x K) stay in L1, and enough rows for a few tiles.
inline bool gemm_rows_fit(std::int64_t M, std::int64_t N, std::int64_t K) {
  return N % 8 == 0 && K >= 1 && K <= 512 && N * K <= (std::int64_t(1) << 17) && M >= 16;
}

/// Packs op(B) [K, N] (B [K, N] row-major with stride ldb, or B [N, K] when trans_b) into panels
/// of 16 columns, panel p at out + p * 16 * K, K rows of its width (16, or 8 for the last).
inline void pack_panels(bool trans_b, const float* B, std::int64_t ldb, std::int64_t K, std::int64_t N, float* out) {
  for (std::int64_t n0 = 0; n0 < N; n0 += 16) {
    const std::int64_t w = std::min<std::int64_t>(16, N - n0);
    float* o = out + n0 * K;
    if (trans_b) {
      for (std::int64_t j = 0; j < w; ++j) {
        const float* src = B + (n0 + j) * ldb;
        for (std::int64_t k = 0; k < K; ++k) o[k * w + j] = src[k];
      }
    } else {
      for (std::int64_t k = 0; k < K; ++k)
        std::memcpy(o + k * w, B + k * ldb + n0, static_cast<std::size_t>(w) * sizeof(float));
    }
  }
}

/// How the kernel writes its block of C: add into it, or set it (to the bias row when one is given,
/// else to the product alone), so a fresh C is never zeroed or filled with the bias beforehand
/// (that memset / copy was ~3% of a FaceBookDSSM epoch's perf samples on one thread). Both give
/// alpha * acc + c with one rounding, c the old value, the bias or 0: the same floats as filling
/// then adding.
struct Store {
  bool overwrite = false;
  const float* bias = nullptr;  // with overwrite: this block's columns of the bias, or null for 0
};

/// C[R rows, W cols] (+)= alpha A[R rows, K] P[K, W], P a packed panel (see Store). A is row-major
/// with stride lda (A[r, k] at r * lda + k), or with kPackedA a micro-panel of 6 rows (A[r, k] at
/// k * 6 + r). Named accumulators: an array of __m256 made GCC store them all to the stack on every k.
template <int R, int W, bool kPackedA = false>
inline void kernel(std::int64_t K, float alpha, const float* A, std::int64_t lda, const float* P, float* C,
                   std::int64_t ldc, Store st) {
  static_assert(R >= 1 && R <= 6 && (W == 8 || W == 16), "kernel: 1-6 rows of 8 or 16 columns");
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const std::int64_t rs = kPackedA ? 1 : lda;
  const float *a0 = A, *a1 = A + rs, *a2 = A + 2 * rs, *a3 = A + 3 * rs, *a4 = A + 4 * rs, *a5 = A + 5 * rs;
  for (std::int64_t k = 0; k < K; ++k) {
    const float* p = P + k * W;
    const __m256 b0 = _mm256_loadu_ps(p);
    const __m256 b1 = W == 16 ? _mm256_loadu_ps(p + 8) : b0;
    // One row: broadcast its A[r, k], multiply-add into its two accumulators.
    auto row = [&](const float* ar, __m256& x0, __m256& x1) {
      const __m256 a = _mm256_broadcast_ss(ar + (kPackedA ? 6 * k : k));
      x0 = _mm256_fmadd_ps(a, b0, x0);
      if (W == 16) x1 = _mm256_fmadd_ps(a, b1, x1);
    };
    row(a0, c00, c01);
    if (R > 1) row(a1, c10, c11);
    if (R > 2) row(a2, c20, c21);
    if (R > 3) row(a3, c30, c31);
    if (R > 4) row(a4, c40, c41);
    if (R > 5) row(a5, c50, c51);
  }
  const __m256 al = _mm256_set1_ps(alpha);
  const __m256 set0 = st.bias ? _mm256_loadu_ps(st.bias) : _mm256_setzero_ps();
  const __m256 set1 = W == 16 && st.bias ? _mm256_loadu_ps(st.bias + 8) : _mm256_setzero_ps();
  auto store = [&](int r, __m256 x0, __m256 x1) {
    float* c = C + r * ldc;
    _mm256_storeu_ps(c, _mm256_fmadd_ps(al, x0, st.overwrite ? set0 : _mm256_loadu_ps(c)));
    if (W == 16) _mm256_storeu_ps(c + 8, _mm256_fmadd_ps(al, x1, st.overwrite ? set1 : _mm256_loadu_ps(c + 8)));
  };
  store(0, c00, c01);
  if (R > 1) store(1, c10, c11);
  if (R > 2) store(2, c20, c21);
  if (R > 3) store(3, c30, c31);
  if (R > 4) store(4, c40, c41);
  if (R > 5) store(5, c50, c51);
}

/// kernel<R, W, kPackedA> for a row count R known only at run time (1-6: tails and micro-panels).
template <int W, bool kPackedA>
inline void kernel_rows(std::int64_t R, std::int64_t K, float alpha, const float* A, std::int64_t lda,
                        const float* P, float* C, std::int64_t ldc, Store st) {
  switch (R) {
    case 6: kernel<6, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    case 5: kernel<5, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    case 4: kernel<4, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    case 3: kernel<3, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    case 2: kernel<2, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    case 1: kernel<1, W, kPackedA>(K, alpha, A, lda, P, C, ldc, st); break;
    default: break;
  }
}

/// Rows [r0, r1) of C (+)= alpha A op(B), for one panel of width W.
template <int W>
inline void panel_rows(std::int64_t r0, std::int64_t r1, std::int64_t K, float alpha, const float* A,
                       std::int64_t lda, const float* P, float* C, std::int64_t ldc, Store st) {
  std::int64_t r = r0;
  for (; r + 6 <= r1; r += 6) kernel<6, W>(K, alpha, A + r * lda, lda, P, C + r * ldc, ldc, st);
  kernel_rows<W, false>(r1 - r, K, alpha, A + r * lda, lda, P, C + r * ldc, ldc, st);
}

/// This panel's view of a whole-row Store: the bias from column n0 on.
inline Store panel_store(Store st, std::int64_t n0) {
  if (st.bias) st.bias += n0;
  return st;
}

/// C [M, N] (+)= alpha A op(B) (see the top and Store); `packed` holds pack_panels(op(B)), N * K
/// floats. C is written tile by tile (96 rows: the tile of A, 96 x K, stays in L2 while each panel
/// streams over it from L1).
inline void gemm_rows(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A, std::int64_t lda,
                      const float* packed, float* C, std::int64_t ldc, Store st) {
  constexpr std::int64_t kTile = 96;
  for (std::int64_t t0 = 0; t0 < M; t0 += kTile) {
    const std::int64_t t1 = std::min(M, t0 + kTile);
    for (std::int64_t n0 = 0; n0 < N; n0 += 16) {
      const float* P = packed + n0 * K;
      if (N - n0 >= 16) panel_rows<16>(t0, t1, K, alpha, A, lda, P, C + n0, ldc, panel_store(st, n0));
      else panel_rows<8>(t0, t1, K, alpha, A, lda, P, C + n0, ldc, panel_store(st, n0));
    }
  }
}

/// Whether gemm_trans_a below takes the product: whole 8-column panels, a depth worth blocking,
/// and at least 128 rows of C to share the packing of op(B) (each thread packs all of it): with
/// 64 rows per thread ([4096, 128] x [4096, 64] on 2 threads) Eigen was 10-30% faster.
inline bool gemm_trans_a_fit(std::int64_t M, std::int64_t N, std::int64_t K) {
  return N % 8 == 0 && M >= 128 && K >= 64 && M * N <= (std::int64_t(1) << 18);
}

/// Most depth of a block of gemm_trans_a: a panel of op(B) (256 x 16) and a micro-panel of op(A)
/// (256 x 6) stay in L1 while the kernel runs.
constexpr std::int64_t kDepthBlock = 256;

/// How many depth blocks gemm_trans_a cuts K into: the fewest of at most kDepthBlock, made even
/// when more than one so two threads can share them (gemm_trans_a_split); a function of K alone.
inline std::int64_t depth_blocks(std::int64_t K) {
  std::int64_t nb = (K + kDepthBlock - 1) / kDepthBlock;
  if (nb > 1 && nb % 2) ++nb;
  return nb;
}
/// Depth of all but the last block: K cut into depth_blocks(K) nearly equal blocks.
inline std::int64_t depth_block(std::int64_t K) {
  const std::int64_t nb = depth_blocks(K);
  return nb > 0 ? (K + nb - 1) / nb : 0;
}

/// Whether the weight-gradient product may be split over threads by depth blocks
/// (gemm_trans_a_split): the whole C [M, N] per block is small, and alpha 1 so each block's
/// partial is its exact sum (alpha * sum would round once more than gemm_trans_a's FMA).
inline bool split_depth_fit(std::int64_t M, std::int64_t N, std::int64_t K, float alpha) {
  return alpha == 1.0f && N % 8 == 0 && M >= 16 && M * N <= (std::int64_t(1) << 18) && depth_blocks(K) >= 2;
}

/// C [M, N] (+)= alpha A^T op(B) (see Store), A stored [K, M] with stride lda, K long: the weight
/// gradient dZ^T X of a linear layer (K = its batch rows). Per depth block (depth_block(K) k):
/// op(B)'s rows are packed into panels and A's into micro-panels of 6 rows (k-major, so the kernel
/// reads both sequentially), then every 6 x 16 block of C adds one FMA chain over the block, blocks
/// in order. The first block writes C as `st` says, later blocks add. `packed` holds
/// kDepthBlock * (N + M + 6) floats.
inline void gemm_trans_a(bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
                         std::int64_t lda, const float* B, std::int64_t ldb, float* packed, float* C,
                         std::int64_t ldc, Store st) {
  float* pb = packed;
  float* pa = packed + kDepthBlock * N;
  const std::int64_t depth = depth_block(K);
  for (std::int64_t k0 = 0; k0 < K; k0 += depth) {
    const std::int64_t kb = std::min(depth, K - k0);
    pack_panels(trans_b, trans_b ? B + k0 : B + k0 * ldb, ldb, kb, N, pb);
    // Micro-panel of rows [r0, r0 + 6): element (r, k) at r0 * kb + k * 6 + (r - r0); missing rows 0.
    for (std::int64_t r0 = 0; r0 < M; r0 += 6) {
      const std::int64_t rows = std::min<std::int64_t>(6, M - r0);
      float* o = pa + r0 * kb;
      for (std::int64_t k = 0; k < kb; ++k) {
        const float* src = A + (k0 + k) * lda + r0;
        for (std::int64_t i = 0; i < 6; ++i) o[k * 6 + i] = i < rows ? src[i] : 0.0f;
      }
    }
    const Store block_st = k0 == 0 ? st : Store{};
    for (std::int64_t n0 = 0; n0 < N; n0 += 16) {
      const float* P = pb + n0 * kb;
      const Store ps = panel_store(block_st, n0);
      for (std::int64_t r0 = 0; r0 < M; r0 += 6) {
        const std::int64_t rows = std::min<std::int64_t>(6, M - r0);
        if (N - n0 >= 16) kernel_rows<16, true>(rows, kb, alpha, pa + r0 * kb, 0, P, C + r0 * ldc + n0, ldc, ps);
        else kernel_rows<8, true>(rows, kb, alpha, pa + r0 * kb, 0, P, C + r0 * ldc + n0, ldc, ps);
      }
    }
  }
}

}  // namespace rechub::detail::avx2
#endif
