#pragma once
// GEMM on row-major float buffers: C = alpha * op(A) * op(B) + beta * C.
//   op(A) is [M, K] (A stored [M, K] with row stride lda, or [K, M] when trans_a),
//   op(B) is [K, N] (B stored [K, N] with row stride ldb, or [N, K] when trans_b), C is [M, N].
// Eigen does the block kernel single-threaded; we split C's rows (or columns when M is small)
// over OpenMP threads ourselves so small products never pay for a thread fork.
#include <Eigen/Core>
#include <cstdint>

#include "rechub/core/parallel.hpp"

namespace rechub::detail {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;
using MapCC = Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;

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

inline void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                 std::int64_t ldc) {
  const std::int64_t work = M * N * (K > 0 ? K : 1);
  const int nt = num_threads();
  if (nt <= 1 || work < (std::int64_t(1) << 18)) {
    gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (M >= 8 * nt) {
    // Split rows of C: rows of op(A) are rows of A, or columns of A when transposed.
    parallel_for(M, N * K + 1 + kParallelMinWork, [&](std::int64_t b, std::int64_t e) {
      const float* a0 = trans_a ? A + b : A + b * lda;
      gemm_serial(trans_a, trans_b, e - b, N, K, alpha, a0, lda, B, ldb, beta, C + b * ldc, ldc);
    });
  } else {
    // Split columns of C: columns of op(B) are columns of B, or rows of B when transposed.
    parallel_for(N, M * K + 1 + kParallelMinWork, [&](std::int64_t b, std::int64_t e) {
      const float* b0 = trans_b ? B + b * ldb : B + b;
      gemm_serial(trans_a, trans_b, M, e - b, K, alpha, A, lda, b0, ldb, beta, C + b, ldc);
    });
  }
}

}  // namespace rechub::detail
