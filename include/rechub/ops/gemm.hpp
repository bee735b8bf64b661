#pragma once
// GEMM on row-major float buffers: C = alpha * op(A) * op(B) + beta * C.
//   op(A) is [M, K] (A stored [M, K] with row stride lda, or [K, M] when trans_a),
//   op(B) is [K, N] (B stored [K, N] with row stride ldb, or [N, K] when trans_b), C is [M, N].
// Eigen does the block kernel single-threaded; we split C's rows (or columns when M is small)
// over OpenMP threads ourselves so small products never pay for a thread fork.
//
// Products large enough for Eigen's blocked GEMM call its kernel directly (eigen_gemm below) with
// per-thread, grow-only pack buffers: through the expression API, Eigen mallocs its packed panels
// on every call once they exceed 128 KB (a training step of a DSSM at batch 512 did ~20 mallocs),
// and a product issued outside our parallel regions could start Eigen's own OpenMP team. Same
// kernel and blocking sizes as Eigen's serial path, so the same results bit for bit.
// Tall products with a weight-sized op(B) (a linear layer's forward and input gradient) take a
// faster road: on AVX2 + FMA our own kernel (ops/gemm_avx2.hpp) with A read in place; elsewhere
// eigen_gemm_tiled (Eigen's kernel, C initialised and filled tile by tile in cache).
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "rechub/core/parallel.hpp"
#include "rechub/ops/gemm_avx2.hpp"

namespace rechub::detail {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;
using MapCC = Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;

/// The calling thread's buffer `which` of at least n floats: 0 and 1 the packed lhs and rhs, 2 the
/// per-block partial products of gemm_trans_a_split.
inline float* gemm_pack_buffer(int which, std::size_t n) {
  struct Buffers {
    float* p[3] = {nullptr, nullptr, nullptr};
    std::size_t cap[3] = {0, 0, 0};
    ~Buffers() {
      for (float* q : p) std::free(q);
    }
  };
  thread_local Buffers b;
  if (b.cap[which] < n) {
    std::free(b.p[which]);
    b.p[which] = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
    b.cap[which] = b.p[which] ? n : 0;
    if (!b.p[which]) throw std::bad_alloc();
  }
  return b.p[which];
}

#if EIGEN_VERSION_AT_LEAST(3, 3, 90)
#define RECHUB_DIRECT_EIGEN_GEMM 1
/// Eigen's serial blocking for a row-major C [M, N] += op(A) op(B), on the pack buffers above.
class GemmBlocking : public Eigen::internal::level3_blocking<float, float> {
 public:
  GemmBlocking(Eigen::Index M, Eigen::Index N, Eigen::Index K) {
    // Eigen computes a row-major C as the column-major C^T = op(B)^T op(A)^T: its "m" is our N.
    this->m_mc = N;
    this->m_nc = M;
    this->m_kc = K;
    Eigen::internal::computeProductBlockingSizes<float, float, 1, Eigen::Index>(this->m_kc, this->m_mc, this->m_nc,
                                                                            Eigen::Index(1));
    this->m_blockA = gemm_pack_buffer(0, static_cast<std::size_t>(this->m_mc * this->m_kc));
    this->m_blockB = gemm_pack_buffer(1, static_cast<std::size_t>(this->m_kc * this->m_nc));
  }
};

/// C += alpha op(A) op(B) through Eigen's GEMM kernel; AOrder/BOrder give the storage of op(A), op(B).
template <int AOrder, int BOrder>
inline void eigen_gemm(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A, std::int64_t lda,
                       const float* B, std::int64_t ldb, float* C, std::int64_t ldc) {
  GemmBlocking blocking(M, N, K);
  Eigen::internal::general_matrix_matrix_product<Eigen::Index, float, AOrder, false, float, BOrder, false,
                                                 Eigen::RowMajor, 1>::run(M, N, K, A, lda, B, ldb, C, 1, ldc, alpha,
                                                                          blocking);
}

/// Rows of C per tile in eigen_gemm_tiled: the tile of C and the tile of op(A) packed for the
/// kernel (T x (N + K) floats) stay near 128 KB, so with the packed op(B) they fit in L2.
inline std::int64_t gemm_tile_rows(std::int64_t N, std::int64_t K) {
  return std::max<std::int64_t>(32, std::min<std::int64_t>(256, (std::int64_t(32768) / (N + K)) / 8 * 8));
}

/// Whether eigen_gemm_tiled suits the product: C tall enough for several tiles and op(B) small
/// enough (a layer's weight) that its packed copy stays in L2 across them.
inline bool gemm_tiles_pay(std::int64_t M, std::int64_t N, std::int64_t K) {
  return N * K <= (std::int64_t(1) << 17) && M >= 2 * gemm_tile_rows(N, K);
}

/// C = init + alpha op(A) op(B) for a row-major C [M, N], computed in tiles of rows with Eigen's
/// packing and kernel: op(B) is packed once, then for each tile `init(r0, r1)` prepares C's rows
/// [r0, r1) (bias, zeros, beta scaling) and the kernel accumulates into them while they are still
/// in cache. Eigen's own driver (eigen_gemm) packs op(A) in blocks of thousands of rows and
/// streams a C filled beforehand from memory: on a [4096, 128] x [128, 256] linear this is 15-25%
/// faster. Each element sums its products over the same K blocks in the same order with the same
/// kernel, and tiles are multiples of the kernel's column step, so the result equals eigen_gemm's
/// bit for bit (tested).
template <int AOrder, int BOrder, class Init>
inline void eigen_gemm_tiled(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
                             std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                             Init&& init) {
  namespace ei = Eigen::internal;
  using Index = Eigen::Index;
  using Traits = ei::gebp_traits<float, float>;
  // Eigen computes the row-major C as the column-major C^T = op(B)^T op(A)^T: its "lhs" is op(B)^T
  // ([N, K]), its "rhs" op(A)^T ([K, M]), and our rows of C are its columns.
  constexpr int LhsOrder = BOrder == Eigen::RowMajor ? Eigen::ColMajor : Eigen::RowMajor;
  constexpr int RhsOrder = AOrder == Eigen::RowMajor ? Eigen::ColMajor : Eigen::RowMajor;
  using LhsMapper = ei::const_blas_data_mapper<float, Index, LhsOrder>;
  using RhsMapper = ei::const_blas_data_mapper<float, Index, RhsOrder>;
  using ResMapper = ei::blas_data_mapper<float, Index, Eigen::ColMajor, Eigen::Unaligned, 1>;
  static_assert(8 % Traits::nr == 0, "tiles (multiples of 8 rows) must be multiples of the kernel's column step");
  const Index T = gemm_tile_rows(N, K);
  Index kc = K, mc = N, nc = T;
  ei::computeProductBlockingSizes<float, float, 1, Index>(kc, mc, nc, Index(1));
  LhsMapper lhs(B, ldb);
  RhsMapper rhs(A, lda);
  ResMapper res(C, ldc, 1);
  ei::gemm_pack_lhs<float, Index, LhsMapper, Traits::mr, Traits::LhsProgress, typename Traits::LhsPacket4Packing,
                    LhsOrder>
      pack_lhs;
  ei::gemm_pack_rhs<float, Index, RhsMapper, Traits::nr, RhsOrder> pack_rhs;
  ei::gebp_kernel<float, float, Index, ResMapper, Traits::mr, Traits::nr, false, false> gebp;
  // op(B)^T packed once, block (i2, k2) at offset i2 * K + k2 * (rows of the block).
  float* packed_b = gemm_pack_buffer(0, static_cast<std::size_t>(N * K));
  float* packed_a = gemm_pack_buffer(1, static_cast<std::size_t>(kc * T));
  for (Index i2 = 0; i2 < N; i2 += mc) {
    const Index m = std::min<Index>(mc, N - i2);
    for (Index k2 = 0; k2 < K; k2 += kc)
      pack_lhs(packed_b + i2 * K + k2 * m, lhs.getSubMapper(i2, k2), std::min<Index>(kc, K - k2), m);
  }
  for (Index r0 = 0; r0 < M; r0 += T) {
    const Index rows = std::min<Index>(T, M - r0);
    init(r0, r0 + rows);
    for (Index k2 = 0; k2 < K; k2 += kc) {
      const Index k = std::min<Index>(kc, K - k2);
      pack_rhs(packed_a, rhs.getSubMapper(k2, r0), k, rows);
      for (Index i2 = 0; i2 < N; i2 += mc) {
        const Index m = std::min<Index>(mc, N - i2);
        gebp(res.getSubMapper(i2, r0), packed_b + i2 * K + k2 * m, packed_a, m, k, rows, alpha);
      }
    }
  }
}
#endif

/// Rows [r0, r1) of a row-major C [., N]: bias on every row when given, else beta C.
inline void gemm_init_rows(float* C, std::int64_t ldc, std::int64_t N, std::int64_t r0, std::int64_t r1,
                           float beta, const float* bias) {
  if (!bias && beta == 1.0f) return;
  for (std::int64_t r = r0; r < r1; ++r) {
    float* c = C + r * ldc;
    if (bias) std::memcpy(c, bias, static_cast<std::size_t>(N) * sizeof(float));
    else if (beta == 0.0f) std::memset(c, 0, static_cast<std::size_t>(N) * sizeof(float));
    else
      for (std::int64_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

#ifdef RECHUB_AVX2_GEMM
/// C [M, N] = (bias on every row, or beta C) + alpha A op(B) by the AVX2 row kernel, op(B) already
/// packed (avx2::pack_panels). The kernel sets a fresh C itself (bias or zeros); any other beta
/// scales C first, then adds.
inline void gemm_rows_packed(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
                             std::int64_t lda, const float* packed, float beta, float* C, std::int64_t ldc,
                             const float* bias) {
  const bool fresh = bias || beta == 0.0f;
  if (!fresh) gemm_init_rows(C, ldc, N, 0, M, beta, nullptr);
  avx2::gemm_rows(M, N, K, alpha, A, lda, packed, C, ldc, avx2::Store{fresh, bias});
}
#endif

/// C = (bias on every row, or beta C) + alpha op(A) op(B) on the calling thread.
inline void gemm_block(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                       const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                       std::int64_t ldc, const float* bias) {
  if (M == 0 || N == 0) return;
  auto init = [&](std::int64_t r0, std::int64_t r1) { gemm_init_rows(C, ldc, N, r0, r1, beta, bias); };
#ifdef RECHUB_AVX2_GEMM
  const bool rows_fit = !trans_a && avx2::gemm_rows_fit(M, N, K);
  if (rows_fit || (trans_a && avx2::gemm_trans_a_fit(M, N, K))) {
    if (rows_fit) {
      float* packed = gemm_pack_buffer(0, static_cast<std::size_t>(N * K));
      avx2::pack_panels(trans_b, B, ldb, K, N, packed);
      gemm_rows_packed(M, N, K, alpha, A, lda, packed, beta, C, ldc, bias);
    } else {
      // The kernel sets a fresh C itself (bias or zeros); any other beta scales C first, then adds.
      const bool fresh = bias || beta == 0.0f;
      if (!fresh) gemm_init_rows(C, ldc, N, 0, M, beta, nullptr);
      float* packed = gemm_pack_buffer(0, static_cast<std::size_t>(avx2::kDepthBlock * (N + M + 6)));
      avx2::gemm_trans_a(trans_b, M, N, K, alpha, A, lda, B, ldb, packed, C, ldc, avx2::Store{fresh, bias});
    }
    return;
  }
#endif
#ifdef RECHUB_DIRECT_EIGEN_GEMM
  // Where Eigen itself would take its blocked GEMM (not a GEMV, not a tiny coefficient loop).
  if (K > 0 && M > 1 && N > 1 && M + N + K >= EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) {
    constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
    if (gemm_tiles_pay(M, N, K)) {
      if (!trans_a && !trans_b) eigen_gemm_tiled<R, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc, init);
      else if (trans_a && !trans_b) eigen_gemm_tiled<Cm, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc, init);
      else if (!trans_a && trans_b) eigen_gemm_tiled<R, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc, init);
      else eigen_gemm_tiled<Cm, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc, init);
      return;
    }
    gemm_init_rows(C, ldc, N, 0, M, beta, bias);
    if (!trans_a && !trans_b) eigen_gemm<R, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else if (trans_a && !trans_b) eigen_gemm<Cm, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else if (!trans_a && trans_b) eigen_gemm<R, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else eigen_gemm<Cm, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    return;
  }
#endif
  if (bias) {
    gemm_init_rows(C, ldc, N, 0, M, 0.0f, bias);
    beta = 1.0f;
  }
  MapC c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (beta == 0.0f) c.setZero();
    else c *= beta;
    return;
  }
  MapCC a(A, trans_a ? K : M, trans_a ? M : K, Eigen::OuterStride<>(lda));
  MapCC b(B, trans_b ? N : K, trans_b ? K : N, Eigen::OuterStride<>(ldb));
  if (beta == 0.0f) {
    if (!trans_a && !trans_b) c.noalias() = alpha * (a * b);
    else if (trans_a && !trans_b) c.noalias() = alpha * (a.transpose() * b);
    else if (!trans_a && trans_b) c.noalias() = alpha * (a * b.transpose());
    else c.noalias() = alpha * (a.transpose() * b.transpose());
  } else {
    if (beta != 1.0f) c *= beta;
    if (!trans_a && !trans_b) c.noalias() += alpha * (a * b);
    else if (trans_a && !trans_b) c.noalias() += alpha * (a.transpose() * b);
    else if (!trans_a && trans_b) c.noalias() += alpha * (a * b.transpose());
    else c.noalias() += alpha * (a.transpose() * b.transpose());
  }
}

#ifdef RECHUB_AVX2_GEMM
/// C [M, N] = (bias on every row, or beta C) + A^T op(B) on all threads, for a weight gradient
/// (A stored [K, M], K = the batch; avx2::split_depth_fit). Splitting C's M rows gave each thread
/// too few (64 or 32 for a 128- or 64-wide layer on 2 threads) for the packing of all of op(B) to
/// pay, and Eigen took those. Here the threads share the depth blocks instead: each packs only
/// its blocks' rows of A and op(B) and writes every block's exact partial sum to its own buffer;
/// the partials are then added into C in block order, which is gemm_trans_a's order and rounding
/// (its FMA with alpha 1 adds the exact block sum): the same floats as one thread's gemm_trans_a
/// whatever the thread count (one thread still gives products under 128 rows of C to Eigen).
inline void gemm_trans_a_split(bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                               std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                               std::int64_t ldc, const float* bias) {
  const std::int64_t nb = avx2::depth_blocks(K), depth = avx2::depth_block(K), MN = M * N;
  float* part = gemm_pack_buffer(2, static_cast<std::size_t>(nb * MN));
  parallel_for_dynamic(nb, 2 * depth * MN, [&](std::int64_t b) {
    float* packed = gemm_pack_buffer(0, static_cast<std::size_t>(avx2::kDepthBlock * (N + M + 6)));
    const std::int64_t k0 = b * depth, kb = std::min(depth, K - k0);
    avx2::gemm_trans_a(trans_b, M, N, kb, 1.0f, A + k0 * lda, lda, trans_b ? B + k0 : B + k0 * ldb, ldb, packed,
                       part + b * MN, N, avx2::Store{true, nullptr});
  });
  parallel_for(M, nb * N, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      float* __restrict c = C + r * ldc;
      const float* __restrict p0 = part + r * N;
      if (bias) {
        for (std::int64_t j = 0; j < N; ++j) c[j] = bias[j] + p0[j];
      } else if (beta == 0.0f) {
        std::memcpy(c, p0, static_cast<std::size_t>(N) * sizeof(float));
      } else {
        if (beta != 1.0f)
          for (std::int64_t j = 0; j < N; ++j) c[j] *= beta;
        for (std::int64_t j = 0; j < N; ++j) c[j] += p0[j];
      }
      for (std::int64_t b = 1; b < nb; ++b) {
        const float* __restrict p = part + b * MN + r * N;
        for (std::int64_t j = 0; j < N; ++j) c[j] += p[j];
      }
    }
  });
}
#endif

inline void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                        const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                        std::int64_t ldc) {
  gemm_block(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr);
}

/// Rows of C per task when threads share the AVX2 row kernel: 8 of its 6-row blocks; FaceBookDSSM's
/// 840 distinct item rows make 18 tasks, its 2,048 user rows 43.
constexpr std::int64_t kRowTile = 48;

/// gemm_serial split over threads; with `bias` [N], C = bias (on every row) + alpha op(A) op(B).
inline void gemm_threaded(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                          std::int64_t ldc, const float* bias) {
  // C's rows [r0, r0 + m) x columns [c0, c0 + n) from A's and B's matching slices.
  auto block = [&](std::int64_t m, std::int64_t n, const float* a0, const float* b0, std::int64_t r0, std::int64_t c0) {
    gemm_block(trans_a, trans_b, m, n, K, alpha, a0, lda, b0, ldb, beta, C + r0 * ldc + c0, ldc,
               bias ? bias + c0 : nullptr);
  };
  const std::int64_t work = M * N * (K > 0 ? K : 1);
  const int nt = num_threads();
  if (nt <= 1 || work < (std::int64_t(1) << 18)) {
    block(M, N, A, B, 0, 0);
    return;
  }
#ifdef RECHUB_AVX2_GEMM
  if (trans_a && avx2::split_depth_fit(M, N, K, alpha)) {
    gemm_trans_a_split(trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc, bias);
    return;
  }
  if (!trans_a && avx2::gemm_rows_fit(M, N, K)) {
    // op(B) packed once here, then tiles of C's rows to whichever thread is free (each row's
    // floats do not depend on its tile).
    float* packed = gemm_pack_buffer(1, static_cast<std::size_t>(N * K));
    avx2::pack_panels(trans_b, B, ldb, K, N, packed);
    const std::int64_t tiles = (M + kRowTile - 1) / kRowTile;
    parallel_for_dynamic(tiles, kRowTile * N * K, [&](std::int64_t t) {
      const std::int64_t r0 = t * kRowTile;
      gemm_rows_packed(std::min(kRowTile, M - r0), N, K, alpha, A + r0 * lda, lda, packed, beta, C + r0 * ldc, ldc,
                       bias);
    });
    return;
  }
#endif
  if (M >= 8 * nt) {
    // Split rows of C: rows of op(A) are rows of A, or columns of A when transposed.
    parallel_for(M, N * K + 1 + kParallelMinWork,
                 [&](std::int64_t b, std::int64_t e) { block(e - b, N, trans_a ? A + b : A + b * lda, B, b, 0); });
  } else {
    // Split columns of C: columns of op(B) are columns of B, or rows of B when transposed.
    parallel_for(N, M * K + 1 + kParallelMinWork,
                 [&](std::int64_t b, std::int64_t e) { block(M, e - b, A, trans_b ? B + b * ldb : B + b, 0, b); });
  }
}

inline void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                 std::int64_t ldc) {
  gemm_threaded(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr);
}

/// C [M, N] = bias [N] (on every row) + alpha op(A) op(B); a null bias gives C = alpha op(A) op(B).
/// The fill runs inside each thread's chunk just before its product: one thread filling a
/// [4096, 256] output beforehand cost about as much as a BatchNorm pass while the other waited.
inline void gemm_bias(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                      const float* A, std::int64_t lda, const float* B, std::int64_t ldb, const float* bias, float* C,
                      std::int64_t ldc) {
  gemm_threaded(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc, bias);
}

}  // namespace rechub::detail
