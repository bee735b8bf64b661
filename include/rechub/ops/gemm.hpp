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
#include <Eigen/Core>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "rechub/core/parallel.hpp"

namespace rechub::detail {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;
using MapCC = Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;

#if EIGEN_VERSION_AT_LEAST(3, 3, 90)
#define RECHUB_DIRECT_EIGEN_GEMM 1
/// The calling thread's packed-panel buffer `which` (0: lhs, 1: rhs) of at least n floats.
inline float* gemm_pack_buffer(int which, std::size_t n) {
  struct Buffers {
    float* p[2] = {nullptr, nullptr};
    std::size_t cap[2] = {0, 0};
    ~Buffers() {
      std::free(p[0]);
      std::free(p[1]);
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
#endif

inline void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                        const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                        std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  MapC c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {
    if (beta == 0.0f) c.setZero();
    else c *= beta;
    return;
  }
#ifdef RECHUB_DIRECT_EIGEN_GEMM
  // Where Eigen itself would take its blocked GEMM (not a GEMV, not a tiny coefficient loop).
  if (M > 1 && N > 1 && M + N + K >= EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) {
    if (beta == 0.0f) c.setZero();
    else if (beta != 1.0f) c *= beta;
    constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
    if (!trans_a && !trans_b) eigen_gemm<R, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else if (trans_a && !trans_b) eigen_gemm<Cm, R>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else if (!trans_a && trans_b) eigen_gemm<R, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    else eigen_gemm<Cm, Cm>(M, N, K, alpha, A, lda, B, ldb, C, ldc);
    return;
  }
#endif
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

/// gemm_serial split over threads; with `bias` [N], C = bias (on every row) + alpha op(A) op(B).
inline void gemm_threaded(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                          std::int64_t ldc, const float* bias) {
  // C's rows [r0, r0 + m) x columns [c0, c0 + n) from A's and B's matching slices.
  auto block = [&](std::int64_t m, std::int64_t n, const float* a0, const float* b0, std::int64_t r0, std::int64_t c0) {
    float* c = C + r0 * ldc + c0;
    if (bias)
      for (std::int64_t r = 0; r < m; ++r)
        std::memcpy(c + r * ldc, bias + c0, static_cast<std::size_t>(n) * sizeof(float));
    gemm_serial(trans_a, trans_b, m, n, K, alpha, a0, lda, b0, ldb, bias ? 1.0f : beta, c, ldc);
  };
  const std::int64_t work = M * N * (K > 0 ? K : 1);
  const int nt = num_threads();
  if (nt <= 1 || work < (std::int64_t(1) << 18)) {
    block(M, N, A, B, 0, 0);
    return;
  }
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
