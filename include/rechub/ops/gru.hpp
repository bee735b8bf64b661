#pragma once
// GRU over padded sequence batches (torch.nn.GRU's equations, gate order r, z, n):
//
//   r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
//   z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
//   n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
//   h_t = (1 - z_t) * n_t + z_t * h_{t-1},        h_{-1} = 0
//   W_ih [3H, I] = [W_ir; W_iz; W_in], W_hh [3H, H], b_ih, b_hh [3H] (torch's layout; biases optional).
//
// Padding. Row b of a padded batch [B, L] holds its len_b valid steps at positions
// [start_b, start_b + len_b): pre-padding has start = L - len, post-padding start = 0. A SeqPack
// lists the valid steps time-major ("packed", like torch's PackedSequence): rows sorted by length,
// longest first, get slots 0..B-1, and step t of the n_t rows still running occupies the packed
// rows [offset_t, offset_t + n_t) in slot order. So the recurrence at step t works on one
// contiguous [n_t, H] block, padding never enters a state, and the state of a pre-padded row
// starts at its first real item.
//
//   seq_pack_ids(ids [B, L])          spans from the ids: first to last id != padding (0)
//   pack_sequence(x [B, L, D], p)     -> [T, D]      the valid positions, packed;  dx = scatter of dy
//   unpack_sequence(y [T, D], p)      -> [B, L, D]   back to the padded layout, 0 at padding
//   packed_last(y [T, D], p)          -> [B, D]      each row's last valid step (0 for an empty row)
//   gru_packed(x [T, I], p, W_ih, W_hh, b_ih, b_hh) -> h [T, H]   one GRU layer
//
// Forward: G = x W_ih^T + b_ih for all T steps in one GEMM; then for each step the recurrence
// A = h_{t-1} W_hh^T + b_hh on the step's block (a small GEMM) and the gates, elementwise.
// Backward (BPTT), with dh_t = dy_t + c_t (c_t: what flows back from step t + 1):
//   dn = dh (1 - z)   an = dn (1 - n^2)   az = dh (h_{t-1} - n) z (1 - z)   ar = an A_n r (1 - r)
//   dG_t = [ar, az, an],   dA_t = [ar, az, an r],   c_{t-1} = dh z + dA_t W_hh
// and after the time loop, over all steps at once: dx += dG W_ih, dW_ih += dG^T x, db_ih += sum dG,
// dW_hh += dA^T h_prev, db_hh += sum dA. Gradients accumulate (+=).
//
// Rows are independent in the recurrence, so threads own fixed ranges of slots (balanced by their
// total length) for the whole time loop, with no synchronisation between steps. Every product has
// a small side (H, 3H, I): they run on rows_gemm, a register-blocked kernel that reads the weight
// from L1 with no packing (Eigen repacks it on every call, which for one time step costs as much
// as the product); weight gradients sum over T in fixed chunks, so results are bit-identical for
// a given thread count. Scratch lives in the step arena: no heap allocation.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

/// Where the valid steps of a padded batch lie, and their packed (time-major) order. Its arrays
/// live in the step arena: a SeqPack is valid until end_step().
struct SeqPack {
  std::int64_t B = 0, L = 0;   // the padded batch
  std::int64_t T = 0;          // valid steps in all (rows of a packed tensor)
  std::int64_t steps = 0;      // the longest row
  const std::int32_t* start = nullptr;   // [B] first valid position of each row
  const std::int32_t* length = nullptr;  // [B] valid steps of each row
  const std::int32_t* order = nullptr;   // [B] slot -> row, longest first (stable)
  const std::int32_t* slot = nullptr;    // [B] row -> slot
  const std::int64_t* offset = nullptr;  // [steps + 1] step t is packed rows [offset[t], offset[t + 1])

  /// Rows still running at step t (those with length > t are slots 0 .. n_t - 1).
  std::int64_t rows_at(std::int64_t t) const { return offset[t + 1] - offset[t]; }
  /// Packed row of (row b, its t-th valid step).
  std::int64_t packed(std::int64_t b, std::int64_t t) const { return offset[t] + slot[b]; }
};

namespace detail {
inline std::int32_t* arena_i32(std::int64_t n) {
  return static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(n) * sizeof(std::int32_t)));
}
inline float* arena_f32(std::int64_t n) {
  return static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(n) * sizeof(float)));
}
/// The pack in the arena, so closures capture one pointer.
inline const SeqPack* arena_pack(const SeqPack& p) {
  auto* q = static_cast<SeqPack*>(step_arena().allocate(sizeof(SeqPack)));
  *q = p;
  return q;
}
}  // namespace detail

/// The pack of B rows of a [B, L] batch whose valid steps are [start[b], start[b] + length[b]).
inline SeqPack seq_pack(std::int64_t B, std::int64_t L, const std::int32_t* start, const std::int32_t* length) {
  RECHUB_CHECK_SHAPE(B >= 0 && L >= 0, "seq_pack: negative size B ", B, ", L ", L);
  SeqPack p;
  p.B = B;
  p.L = L;
  std::int32_t* st = detail::arena_i32(B);
  std::int32_t* len = detail::arena_i32(B);
  std::int64_t steps = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    RECHUB_CHECK_AS(DataError, length[b] >= 0 && start[b] >= 0 && start[b] + std::int64_t(length[b]) <= L,
                    "seq_pack: row ", b, " spans [", start[b], ", ", std::int64_t(start[b]) + length[b],
                    ") outside the ", L, " positions of the batch");
    st[b] = start[b];
    len[b] = length[b];
    steps = std::max<std::int64_t>(steps, length[b]);
  }
  // Counting sort by length, longest first, stable: O(B + L), no comparison sort.
  std::int64_t* count = static_cast<std::int64_t*>(
      step_arena().allocate(static_cast<std::size_t>(steps + 2) * sizeof(std::int64_t)));
  std::fill(count, count + steps + 2, std::int64_t(0));
  for (std::int64_t b = 0; b < B; ++b) ++count[steps - len[b] + 1];  // bucket by steps - len: longest first
  for (std::int64_t k = 1; k <= steps + 1; ++k) count[k] += count[k - 1];
  std::int32_t* order = detail::arena_i32(B);
  std::int32_t* slot = detail::arena_i32(B);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t s = count[steps - len[b]]++;
    order[s] = static_cast<std::int32_t>(b);
    slot[b] = static_cast<std::int32_t>(s);
  }
  // n_t = rows with length > t; with slots sorted by length these are slots 0 .. n_t - 1.
  std::int64_t* offset = static_cast<std::int64_t*>(
      step_arena().allocate(static_cast<std::size_t>(steps + 1) * sizeof(std::int64_t)));
  offset[0] = 0;
  std::int64_t n = B;  // rows with length > t, walking t upwards over the sorted slots from the end
  for (std::int64_t t = 0; t < steps; ++t) {
    while (n > 0 && len[order[n - 1]] <= t) --n;
    offset[t + 1] = offset[t] + n;
  }
  p.T = offset[steps];
  p.steps = steps;
  p.start = st;
  p.length = len;
  p.order = order;
  p.slot = slot;
  p.offset = offset;
  return p;
}

/// The pack of an id batch [B, L]: a row's valid steps run from its first to its last id that is
/// not `padding_idx`, so pre- and post-padded rows (and rows padded on both sides) both work.
/// Padding ids inside that run count as steps. A row of padding only has no steps.
inline SeqPack seq_pack_ids(const Tensor& ids, std::int32_t padding_idx = 0) {
  detail::check_cpu("seq_pack_ids", ids);
  detail::check_i32("seq_pack_ids", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2, "seq_pack_ids: ids must be [B, L], got ", ids.shape().str());
  const std::int64_t B = ids.dim(0), L = ids.dim(1);
  std::int32_t* start = detail::arena_i32(B);
  std::int32_t* len = detail::arena_i32(B);
  const std::int32_t* pid = ids.i32();
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int32_t* row = pid + b * L;
    std::int64_t first = 0, last = L;
    while (first < L && row[first] == padding_idx) ++first;
    while (last > first && row[last - 1] == padding_idx) --last;
    start[b] = static_cast<std::int32_t>(first < L ? first : 0);
    len[b] = static_cast<std::int32_t>(last - first);
  }
  return seq_pack(B, L, start, len);
}

/// Every position of a [B, L] batch is a step (what torch's GRU computes when fed a padded batch
/// without packing: the padding runs through the recurrence).
inline SeqPack seq_pack_full(std::int64_t B, std::int64_t L) {
  std::int32_t* start = detail::arena_i32(B);
  std::int32_t* len = detail::arena_i32(B);
  for (std::int64_t b = 0; b < B; ++b) {
    start[b] = 0;
    len[b] = static_cast<std::int32_t>(L);
  }
  return seq_pack(B, L, start, len);
}

/// The ids [B, L] of a batch at its packed steps -> int32 [1, T] in the step arena (embed them
/// with embedding_bag(..., concat) to get packed inputs without a padded intermediate).
inline Tensor pack_ids(const Tensor& ids, const SeqPack& p) {
  detail::check_i32("pack_ids", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2 && ids.dim(0) == p.B && ids.dim(1) == p.L, "pack_ids: ids ", ids.shape().str(),
                     " do not match the pack of [", p.B, ", ", p.L, "]");
  Tensor out = step_arena().tensor({1, p.T}, DType::i32);
  std::int32_t* o = out.i32();
  const std::int32_t* pid = ids.i32();
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t t = 0; t < p.length[b]; ++t) o[p.packed(b, t)] = pid[b * p.L + p.start[b] + t];
  return out;
}

/// int32 [B, L] in the step arena: 1 at the pack's valid positions, 0 at padding (a softmax mask).
inline Tensor pack_mask(const SeqPack& p) {
  Tensor m = step_arena().zeros({p.B, p.L}, DType::i32);
  for (std::int64_t b = 0; b < p.B; ++b)
    for (std::int64_t t = 0; t < p.length[b]; ++t) m.i32()[b * p.L + p.start[b] + t] = 1;
  return m;
}

/// Each row's last valid id -> int32 [B] in the step arena (`empty` for a row without steps).
inline Tensor last_ids(const Tensor& ids, const SeqPack& p, std::int32_t empty = 0) {
  detail::check_i32("last_ids", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2 && ids.dim(0) == p.B && ids.dim(1) == p.L, "last_ids: ids ", ids.shape().str(),
                     " do not match the pack of [", p.B, ", ", p.L, "]");
  Tensor out = step_arena().tensor({p.B}, DType::i32);
  for (std::int64_t b = 0; b < p.B; ++b)
    out.i32()[b] = p.length[b] > 0 ? ids.i32()[b * p.L + p.start[b] + p.length[b] - 1] : empty;
  return out;
}

namespace detail {
// Row-major array maps over blocks with a row stride (the gate columns of a [n, 3H] block).
using ArrR = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ArrMap = Eigen::Map<ArrR, Eigen::Unaligned, Eigen::OuterStride<>>;
using ArrCMap = Eigen::Map<const ArrR, Eigen::Unaligned, Eigen::OuterStride<>>;

/// Copies packed <-> padded rows: for every valid (row b, step t), fn(packed row, padded row).
template <class Fn>
void for_each_step(const SeqPack& p, Fn&& fn) {
  parallel_for(p.B, p.L * 8, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t b = s; b < e; ++b)
      for (std::int64_t t = 0; t < p.length[b]; ++t) fn(p.packed(b, t), b * p.L + p.start[b] + t);
  });
}

/// Slot ranges for `parts` threads with about equal total length each: bounds[0..parts].
inline void slot_chunks(const SeqPack& p, std::int64_t parts, std::int64_t* bounds) {
  bounds[0] = 0;
  std::int64_t acc = 0, k = 1;
  for (std::int64_t j = 0; j < p.B && k < parts; ++j) {
    acc += p.length[p.order[j]];
    while (k < parts && acc * parts >= p.T * k) bounds[k++] = j + 1;
  }
  while (k <= parts) bounds[k++] = p.B;
}

/// Runs fn(j0, j1) over slot ranges balanced by length, one per thread when the work pays for it.
template <class Fn>
void for_slot_chunks(const SeqPack& p, std::int64_t cost_per_step, Fn&& fn) {
  const std::int64_t parts = p.T * cost_per_step >= kParallelMinWork ? std::min<std::int64_t>(num_threads(), p.B) : 1;
  std::int64_t bounds[65];
  const std::int64_t np = std::min<std::int64_t>(parts, 64);
  slot_chunks(p, np, bounds);
  parallel_for(np, kParallelMinWork, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t c = s; c < e; ++c)
      if (bounds[c] < bounds[c + 1]) fn(bounds[c], bounds[c + 1]);
  });
}

/// An optional input (a bias) that is present and trainable.
inline bool gru_needs_grad(const Var& v) { return v.defined() && v.requires_grad(); }

inline void check_pack(const char* op, const SeqPack& p) {
  RECHUB_CHECK_AS(ConfigError, p.offset != nullptr, op, ": the SeqPack is empty (make one with seq_pack_ids)");
}

/// How rows_gemm starts each output row: from zero, from C itself (accumulate), or from a bias row.
enum class RowsInit { zero, accumulate, bias };

#if defined(__GNUC__)
// 8 floats in GCC / Clang vector extensions: the accumulators below are vectors along N, which is
// the layout the compiler must not choose for us (left to itself it vectorised across rows, with
// shuffles, 15x slower). Loads and stores go through memcpy: rows need not be 32-byte aligned.
typedef float rows_v8 __attribute__((vector_size(32)));
inline rows_v8 rows_load(const float* p) {
  rows_v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void rows_store(float* p, rows_v8 v) { std::memcpy(p, &v, sizeof v); }

/// Rows [i, i + R) of C = init + A B with B [K, N] row-major, N a multiple of 8 known at compile
/// time: the R x N accumulators stay in registers for the whole K loop.
template <int N, int R>
inline void rows_gemm_block(std::int64_t i, std::int64_t K, const float* __restrict A, std::int64_t lda,
                            const float* __restrict B, float* __restrict C, std::int64_t ldc, RowsInit init,
                            const float* __restrict bias) {
  constexpr int V = N / 8;
  rows_v8 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = init == RowsInit::zero    ? rows_v8{}
                  : init == RowsInit::bias ? rows_load(bias + 8 * v)
                                           : rows_load(C + (i + r) * ldc + 8 * v);
  for (std::int64_t k = 0; k < K; ++k) {
    rows_v8 b[V];
    for (int v = 0; v < V; ++v) b[v] = rows_load(B + k * N + 8 * v);
    for (int r = 0; r < R; ++r) {
      const float a = A[(i + r) * lda + k];
      for (int v = 0; v < V; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) rows_store(C + (i + r) * ldc + 8 * v, acc[r][v]);
}
#else
template <int N, int R>
inline void rows_gemm_block(std::int64_t i, std::int64_t K, const float* A, std::int64_t lda, const float* B, float* C,
                            std::int64_t ldc, RowsInit init, const float* bias) {
  for (int r = 0; r < R; ++r) {
    float* c = C + (i + r) * ldc;
    for (int j = 0; j < N; ++j) c[j] = init == RowsInit::zero ? 0.0f : init == RowsInit::bias ? bias[j] : c[j];
    for (std::int64_t k = 0; k < K; ++k)
      for (int j = 0; j < N; ++j) c[j] += A[(i + r) * lda + k] * B[k * N + j];
  }
}
#endif
template <int N>
inline void rows_gemm_fixed(std::int64_t m, std::int64_t K, const float* A, std::int64_t lda, const float* B, float* C,
                            std::int64_t ldc, RowsInit init, const float* bias) {
  constexpr int R = N <= 16 ? 4 : N <= 32 ? 3 : N <= 48 ? 2 : 1;  // about 12 of AVX2's 16 vector registers
  std::int64_t i = 0;
  for (; i + R <= m; i += R) rows_gemm_block<N, R>(i, K, A, lda, B, C, ldc, init, bias);
  for (; i < m; ++i) rows_gemm_block<N, 1>(i, K, A, lda, B, C, ldc, init, bias);
}
/// C [m, N] = init + A [m, K] B [K, N] for a small, row-major B that stays in L1 (serial).
inline void rows_gemm(std::int64_t m, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                      float* C, std::int64_t ldc, RowsInit init, const float* bias = nullptr) {
  if (m <= 0) return;
  switch (N) {
    case 8: return rows_gemm_fixed<8>(m, K, A, lda, B, C, ldc, init, bias);
    case 16: return rows_gemm_fixed<16>(m, K, A, lda, B, C, ldc, init, bias);
    case 24: return rows_gemm_fixed<24>(m, K, A, lda, B, C, ldc, init, bias);
    case 32: return rows_gemm_fixed<32>(m, K, A, lda, B, C, ldc, init, bias);
    case 48: return rows_gemm_fixed<48>(m, K, A, lda, B, C, ldc, init, bias);
    case 64: return rows_gemm_fixed<64>(m, K, A, lda, B, C, ldc, init, bias);
    case 96: return rows_gemm_fixed<96>(m, K, A, lda, B, C, ldc, init, bias);
    default: break;
  }
  if (init == RowsInit::bias)
    for (std::int64_t i = 0; i < m; ++i) std::memcpy(C + i * ldc, bias, static_cast<std::size_t>(N) * sizeof(float));
  gemm_serial(false, false, m, N, K, 1.0f, A, lda, B, N, init == RowsInit::zero ? 0.0f : 1.0f, C, ldc);
}
/// rows_gemm over [0, m) split in row chunks over threads when large. A row costs N K / 8 vector
/// FMAs: one user's 50-step history (serving) stays on the calling thread.
inline void rows_gemm_parallel(std::int64_t m, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                               const float* B, float* C, std::int64_t ldc, RowsInit init, const float* bias = nullptr) {
  parallel_for(m, N * K / 8 + 1, [&](std::int64_t b, std::int64_t e) {
    rows_gemm(e - b, N, K, A + b * lda, lda, B, C + b * ldc, ldc, init, bias);
  });
}
/// dW [N, K] += A^T B summed over the T rows of A [T, K] and B [T, N] (a weight gradient: K, N
/// small, T long). Rows are taken in chunks whose A^T fits in L1 and summed with rows_gemm into
/// one [K, N] partial per fixed chunk group, added in order: bit-identical for any thread count.
inline void rows_weight_grad(float* dW, const float* A, std::int64_t K, const float* B, std::int64_t N,
                             std::int64_t T) {
  if (T <= 0) return;
  constexpr std::int64_t kRows = 256, kGroups = 8;
  const std::int64_t groups = std::min<std::int64_t>(kGroups, (T + kRows - 1) / kRows);
  float* part = step_arena().zeros({groups, K * N}).f32();
  float* at = arena_f32(groups * K * kRows);
  parallel_for(groups, T / groups * K * N, [&](std::int64_t g0, std::int64_t g1) {
    for (std::int64_t g = g0; g < g1; ++g) {
      float* acc = part + g * K * N;
      float* a_t = at + g * K * kRows;
      for (std::int64_t r0 = T * g / groups; r0 < T * (g + 1) / groups; r0 += kRows) {
        const std::int64_t n = std::min(kRows, T * (g + 1) / groups - r0);
        for (std::int64_t r = 0; r < n; ++r)
          for (std::int64_t k = 0; k < K; ++k) a_t[k * n + r] = A[(r0 + r) * K + k];
        rows_gemm(K, N, n, a_t, n, B + r0 * N, acc, N, RowsInit::accumulate);
      }
    }
  });
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t j = 0; j < N; ++j) dW[j * K + k] += part[g * K * N + k * N + j];
}
/// out [c, r] = w [r, c] (a weight transposed into the step arena, so products read it row-wise).
inline float* transposed(const float* w, std::int64_t r, std::int64_t c) {
  float* out = arena_f32(r * c);
  for (std::int64_t i = 0; i < r; ++i)
    for (std::int64_t j = 0; j < c; ++j) out[j * r + i] = w[i * c + j];
  return out;
}

/// Forward recurrence over slots [j0, j1) for all steps. G [T, 3H] holds x W_ih^T + b_ih on entry
/// and the gates [r, z, n] on exit; An [T, H] receives W_hn h + b_hn; Y [T, H] the states;
/// A is scratch of [B, 3H]; WhhT is W_hh^T [H, 3H].
inline void gru_forward_slots(const SeqPack& p, std::int64_t j0, std::int64_t j1, std::int64_t H, const float* WhhT,
                              const float* bhh, float* G, float* An, float* Y, float* A) {
  const std::int64_t H3 = 3 * H;
  for (std::int64_t t = 0; t < p.steps; ++t) {
    const std::int64_t hi = std::min(j1, p.rows_at(t));
    if (hi <= j0) break;  // n_t only shrinks
    const std::int64_t m = hi - j0, row = p.offset[t] + j0;
    float* a = A + j0 * H3;
    const float* hprev = t > 0 ? Y + (p.offset[t - 1] + j0) * H : nullptr;
    if (hprev) {
      rows_gemm(m, H3, H, hprev, H, WhhT, a, H3, bhh ? RowsInit::bias : RowsInit::zero, bhh);
    } else {
      for (std::int64_t i = 0; i < m; ++i) {
        if (bhh) std::memcpy(a + i * H3, bhh, static_cast<std::size_t>(H3) * sizeof(float));
        else std::memset(a + i * H3, 0, static_cast<std::size_t>(H3) * sizeof(float));
      }
    }
    float* g = G + row * H3;
    ArrMap grz(g, m, 2 * H, Eigen::OuterStride<>(H3));
    ArrCMap arz(a, m, 2 * H, Eigen::OuterStride<>(H3));
    grz = (1.0f + (-(grz + arz)).exp()).inverse();
    ArrMap gn(g + 2 * H, m, H, Eigen::OuterStride<>(H3));
    ArrCMap r(g, m, H, Eigen::OuterStride<>(H3)), z(g + H, m, H, Eigen::OuterStride<>(H3));
    ArrCMap an(a + 2 * H, m, H, Eigen::OuterStride<>(H3));
    ArrMap(An + row * H, m, H, Eigen::OuterStride<>(H)) = an;
    gn = (gn + r * an).tanh();
    ArrMap y(Y + row * H, m, H, Eigen::OuterStride<>(H));
    if (hprev) y = gn + z * (ArrCMap(hprev, m, H, Eigen::OuterStride<>(H)) - gn);
    else y = gn - z * gn;
  }
}

/// One row of the backward gates (see the header): c holds the carry on entry and the part of
/// dh_{t-1} that flows through z on exit; writes dG and dA of the row.
template <bool HasPrev>
inline void gru_backward_row(std::int64_t H, const float* __restrict dy, const float* __restrict g,
                             const float* __restrict an, const float* __restrict hp, float* __restrict dg,
                             float* __restrict da, float* __restrict c) {
  const float *r = g, *z = g + H, *n = g + 2 * H;
  for (std::int64_t j = 0; j < H; ++j) {
    const float d = c[j] + dy[j];
    const float dn = d * (1.0f - z[j]) * (1.0f - n[j] * n[j]);
    const float dr = dn * an[j] * r[j] * (1.0f - r[j]);
    const float dz = d * ((HasPrev ? hp[j] : 0.0f) - n[j]) * z[j] * (1.0f - z[j]);
    dg[j] = dr;
    dg[H + j] = dz;
    dg[2 * H + j] = dn;
    da[j] = dr;
    da[H + j] = dz;
    da[2 * H + j] = dn * r[j];
    c[j] = d * z[j];
  }
}

/// Backward recurrence over slots [j0, j1), last step first. dY [T, H] is the output gradient;
/// writes dG, dA [T, 3H]; C [B, H] is the zeroed carry (gradient into each slot's previous state).
inline void gru_backward_slots(const SeqPack& p, std::int64_t j0, std::int64_t j1, std::int64_t H, const float* Whh,
                               const float* G, const float* An, const float* Y, const float* dY, float* dG, float* dA,
                               float* C) {
  const std::int64_t H3 = 3 * H;
  for (std::int64_t t = p.steps - 1; t >= 0; --t) {
    const std::int64_t hi = std::min(j1, p.rows_at(t));
    if (hi <= j0) continue;
    const std::int64_t m = hi - j0, row = p.offset[t] + j0;
    const float* hp = t > 0 ? Y + (p.offset[t - 1] + j0) * H : nullptr;
    float* da = dA + row * H3;
    for (std::int64_t i = 0; i < m; ++i) {
      if (hp) gru_backward_row<true>(H, dY + (row + i) * H, G + (row + i) * H3, An + (row + i) * H, hp + i * H,
                                     dG + (row + i) * H3, da + i * H3, C + (j0 + i) * H);
      else gru_backward_row<false>(H, dY + (row + i) * H, G + (row + i) * H3, An + (row + i) * H, nullptr,
                                   dG + (row + i) * H3, da + i * H3, C + (j0 + i) * H);
    }
    if (t > 0) rows_gemm(m, H, H3, da, H3, Whh, C + j0 * H, H, RowsInit::accumulate);
  }
}

/// dst[j] += sum over rows of src [rows, w], in fixed row chunks (thread-count independent).
inline void add_column_sums(float* dst, const float* src, std::int64_t rows, std::int64_t w) {
  constexpr std::int64_t kChunks = 16;
  const std::int64_t nc = std::max<std::int64_t>(1, std::min(rows, kChunks));
  float* part = step_arena().zeros({nc, w}).f32();
  parallel_for(nc, w * (rows / nc + 1), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t c = b; c < e; ++c) {
      float* acc = part + c * w;
      for (std::int64_t r = rows * c / nc; r < rows * (c + 1) / nc; ++r)
        for (std::int64_t j = 0; j < w; ++j) acc[j] += src[r * w + j];
    }
  });
  for (std::int64_t c = 0; c < nc; ++c)
    for (std::int64_t j = 0; j < w; ++j) dst[j] += part[c * w + j];
}
}  // namespace detail

/// The valid positions of x [B, L, D] in packed order -> [T, D].
inline Var pack_sequence(const Var& x, const SeqPack& p) {
  const Tensor& X = x.value();
  detail::check_cpu("pack_sequence", X);
  detail::check_f32("pack_sequence", X, "x");
  detail::check_pack("pack_sequence", p);
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && X.dim(0) == p.B && X.dim(1) == p.L, "pack_sequence: x ", X.shape().str(),
                     " does not match the pack of [", p.B, ", ", p.L, "]");
  const std::int64_t D = X.dim(2);
  Var out = detail::make_output("pack_sequence", Shape{p.T, D}, DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  const std::size_t bytes = static_cast<std::size_t>(D) * sizeof(float);
  detail::for_each_step(p, [&](std::int64_t q, std::int64_t r) { std::memcpy(Y + q * D, px + r * D, bytes); });
  const SeqPack* pp = detail::arena_pack(p);
  detail::record(out, [x, out, pp, D] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    detail::for_each_step(*pp, [&](std::int64_t q, std::int64_t r) {
      for (std::int64_t j = 0; j < D; ++j) dx[r * D + j] += dy[q * D + j];
    });
  });
  return out;
}

/// Packed rows y [T, D] back to the padded layout [B, L, D], zeros at padding.
inline Var unpack_sequence(const Var& y, const SeqPack& p) {
  const Tensor& Yp = y.value();
  detail::check_cpu("unpack_sequence", Yp);
  detail::check_f32("unpack_sequence", Yp, "y");
  detail::check_pack("unpack_sequence", p);
  RECHUB_CHECK_SHAPE(Yp.ndim() == 2 && Yp.dim(0) == p.T, "unpack_sequence: y ", Yp.shape().str(), " is not [", p.T,
                     ", D] (the pack's ", p.T, " steps)");
  const std::int64_t D = Yp.dim(1);
  Var out = detail::make_output("unpack_sequence", Shape{p.B, p.L, D}, DType::f32, y);
  out.node()->value.zero_();
  float* O = out.value().f32();
  const float* py = Yp.f32();
  const std::size_t bytes = static_cast<std::size_t>(D) * sizeof(float);
  detail::for_each_step(p, [&](std::int64_t q, std::int64_t r) { std::memcpy(O + r * D, py + q * D, bytes); });
  const SeqPack* pp = detail::arena_pack(p);
  detail::record(out, [y, out, pp, D] {
    float* dy = y.grad_acc().f32();
    const float* g = out.grad().f32();
    detail::for_each_step(*pp, [&](std::int64_t q, std::int64_t r) {
      for (std::int64_t j = 0; j < D; ++j) dy[q * D + j] += g[r * D + j];
    });
  });
  return out;
}

/// Each row's last valid step of packed y [T, D] -> [B, D] (zeros for a row without steps).
inline Var packed_last(const Var& y, const SeqPack& p) {
  const Tensor& Yp = y.value();
  detail::check_cpu("packed_last", Yp);
  detail::check_f32("packed_last", Yp, "y");
  detail::check_pack("packed_last", p);
  RECHUB_CHECK_SHAPE(Yp.ndim() == 2 && Yp.dim(0) == p.T, "packed_last: y ", Yp.shape().str(), " is not [", p.T,
                     ", D] (the pack's ", p.T, " steps)");
  const std::int64_t D = Yp.dim(1), B = p.B;
  Var out = detail::make_output("packed_last", Shape{B, D}, DType::f32, y);
  float* O = out.value().f32();
  const float* py = Yp.f32();
  for (std::int64_t b = 0; b < B; ++b) {
    if (p.length[b] == 0) std::memset(O + b * D, 0, static_cast<std::size_t>(D) * sizeof(float));
    else std::memcpy(O + b * D, py + p.packed(b, p.length[b] - 1) * D, static_cast<std::size_t>(D) * sizeof(float));
  }
  const SeqPack* pp = detail::arena_pack(p);
  detail::record(out, [y, out, pp, D] {
    float* dy = y.grad_acc().f32();
    const float* g = out.grad().f32();
    for (std::int64_t b = 0; b < pp->B; ++b) {
      if (pp->length[b] == 0) continue;
      float* d = dy + pp->packed(b, pp->length[b] - 1) * D;
      for (std::int64_t j = 0; j < D; ++j) d[j] += g[b * D + j];
    }
  });
  return out;
}

/// One GRU layer over packed steps x [T, I] -> states [T, H]; b_ih, b_hh may be undefined (no bias).
inline Var gru_packed(const Var& x, const SeqPack& p, const Var& w_ih, const Var& w_hh, const Var& b_ih = Var(),
                      const Var& b_hh = Var()) {
  const Tensor &X = x.value(), &Wi = w_ih.value(), &Wh = w_hh.value();
  detail::check_cpu("gru", X, Wi, Wh);
  detail::check_f32("gru", X, "input");
  detail::check_pack("gru", p);
  RECHUB_CHECK_SHAPE(Wh.ndim() == 2 && Wh.dim(0) == 3 * Wh.dim(1) && Wh.dim(1) > 0, "gru: weight_hh ",
                     Wh.shape().str(), " must be [3H, H]");
  const std::int64_t H = Wh.dim(1), H3 = 3 * H;
  RECHUB_CHECK_SHAPE(Wi.ndim() == 2 && Wi.dim(0) == H3, "gru: weight_ih ", Wi.shape().str(), " must be [", H3,
                     ", I] for hidden size ", H);
  const std::int64_t I = Wi.dim(1);
  RECHUB_CHECK_SHAPE(X.ndim() == 2 && X.dim(0) == p.T && X.dim(1) == I, "gru: input ", X.shape().str(),
                     " does not match [", p.T, ", ", I, "] (packed steps x weight_ih's input size)");
  if (b_ih.defined())
    RECHUB_CHECK_SHAPE(b_ih.value().numel() == H3, "gru: bias_ih ", b_ih.shape().str(), " must have ", H3, " entries");
  if (b_hh.defined())
    RECHUB_CHECK_SHAPE(b_hh.value().numel() == H3, "gru: bias_hh ", b_hh.shape().str(), " must have ", H3, " entries");
  Var out = detail::make_output("gru", Shape{p.T, H}, DType::f32, x, w_ih, w_hh);
  out.node()->requires_grad =
      out.requires_grad() || (grad_enabled() && (detail::gru_needs_grad(b_ih) || detail::gru_needs_grad(b_hh)));
  const std::int64_t T = p.T;
  float* G = detail::arena_f32(T * H3);
  float* An = detail::arena_f32(T * H);
  float* A = detail::arena_f32(p.B * H3);
  if (T > 0) {
    detail::rows_gemm_parallel(T, H3, I, X.f32(), I, detail::transposed(Wi.f32(), H3, I), G, H3,
                               b_ih.defined() ? detail::RowsInit::bias : detail::RowsInit::zero,
                               b_ih.defined() ? b_ih.value().f32() : nullptr);
    const float* bh = b_hh.defined() ? b_hh.value().f32() : nullptr;
    const float* whh = detail::transposed(Wh.f32(), H3, H);
    float* Y = out.value().f32();
    detail::for_slot_chunks(p, 10 * H3 * H, [&](std::int64_t j0, std::int64_t j1) {
      detail::gru_forward_slots(p, j0, j1, H, whh, bh, G, An, Y, A);
    });
  }
  if (!out.requires_grad()) return out;
  const SeqPack* pp = detail::arena_pack(p);
  detail::record(out, [x, w_ih, w_hh, b_ih, b_hh, out, pp, G, An, H, I] {
    const SeqPack& p = *pp;
    const std::int64_t T = p.T, H3 = 3 * H;
    if (T == 0) return;
    float* dG = detail::arena_f32(T * H3);
    float* dA = detail::arena_f32(T * H3);
    float* C = step_arena().zeros({p.B, H}).f32();
    const float* Y = out.value().f32();
    const float* whh = w_hh.value().f32();
    const float* dY = out.grad().f32();
    detail::for_slot_chunks(p, 12 * H3 * H, [&](std::int64_t j0, std::int64_t j1) {
      detail::gru_backward_slots(p, j0, j1, H, whh, G, An, Y, dY, dG, dA, C);
    });
    if (x.requires_grad())
      detail::rows_gemm_parallel(T, I, H3, dG, H3, w_ih.value().f32(), x.grad_acc().f32(), I,
                                 detail::RowsInit::accumulate);
    if (w_ih.requires_grad())
      detail::rows_weight_grad(w_ih.grad_acc().f32(), x.value().f32(), I, dG, H3, T);
    if (detail::gru_needs_grad(b_ih)) detail::add_column_sums(b_ih.grad_acc().f32(), dG, T, H3);
    if (detail::gru_needs_grad(b_hh)) detail::add_column_sums(b_hh.grad_acc().f32(), dA, T, H3);
    const std::int64_t n0 = p.rows_at(0), Tp = T - n0;  // steps with a previous state
    if (w_hh.requires_grad() && Tp > 0) {
      // h_prev of packed row offset[t] + j is Y[offset[t - 1] + j]: gather once, then one GEMM.
      float* Hp = detail::arena_f32(Tp * H);
      for (std::int64_t t = 1; t < p.steps; ++t)
        std::memcpy(Hp + (p.offset[t] - n0) * H, Y + p.offset[t - 1] * H,
                    static_cast<std::size_t>(p.rows_at(t) * H) * sizeof(float));
      detail::rows_weight_grad(w_hh.grad_acc().f32(), Hp, H, dA + n0 * H3, H3, Tp);
    }
  });
  return out;
}

}  // namespace rechub
