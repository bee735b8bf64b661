#pragma once
// Attention ops: multi-head scaled dot-product attention (fused), its padding-free ("packed")
// variant, the packed input projection of torch's MultiheadAttention, and the per-position helpers
// a self-attentive sequence model needs around them (token + position embedding, padding masks,
// packing, a parallel dropout).
//
//   attention(q, k, v, o)    B batch rows, Lq queries, Lk keys, H heads of width dh, D = H dh.
//       q [B, Lq, Wq], k [B, Lk, Wk], v [B, Lk, Wv]: head h reads columns off + h dh .. off + (h+1) dh
//       of each (o.q_offset / k_offset / v_offset), so packed projections ([B, L, 3D] or [B, L, 2D])
//       are used in place, without splitting copies. Per (b, h):
//         S = scale Q K^T  [Lq, Lk]                      scale = 1/sqrt(dh) unless given
//         S_ij = -inf where key j is hidden: j > i (causal, needs Lq == Lk) or key_mask[b, j] == 0
//         P = softmax_rows(S)   (a row with every key hidden gives P = 0, hence output 0;
//                                torch returns NaN there)
//         Pd = P * keep / (1 - p)                        dropout on the attention weights (training)
//         O = Pd V  -> out[b, :, h dh:(h+1) dh]          out [B, Lq, D]
//       Backward, with dPd = dO V^T and c_i = sum_j Pd_ij dPd_ij (= sum_j P_ij dP_ij):
//         dS = Pd * dPd - P * c   (softmax and dropout in one: Pd dPd = P dP)
//         dQ += scale dS K,  dK += scale dS^T Q,  dV += Pd^T dO.
//   pack_rows(ids [B, L])    the N non-padding positions (id != 0), row after row (PackedRows);
//       last_packed_rows / last_valid_positions: each row's newest position, packed or padded.
//   attention_packed(q, k, v, rows, o)   the same over q, k, v [N, W] holding only those positions:
//       row b's queries attend to row b's keys (causal by position order). A padded batch spends
//       most of its work on padding (ML-1M at L = 200: about half the positions, and two thirds
//       of the attention products); packed, it is skipped. o.attend_padding reproduces a padded
//       computation WITHOUT a key mask exactly: a padded position whose input row is 0 projects to
//       the bias (k0, v0), so the c_i padded keys query i sees (causal: those before it) act as
//       one key of score scale q_i.k0 + log c_i and value v0 (under dropout each of the c_i copies
//       is kept independently: the kept share is Binomial(c_i, 1 - p) / c_i). Its gradient goes to
//       o.pad_kv: dk0 += scale dS0_i q_i, dv0 += Pd0_i dO_i, dq_i += scale dS0_i k0.
//   in_projection(x, W, b, r0, r1)   y = x W[r0:r1]^T + b[r0:r1]: a block of rows of a packed
//       weight (MultiheadAttention's in_proj_weight [3D, D]) without copying it;
//       dx += dy W[r0:r1],  dW[r0:r1] += dy^T x,  db[r0:r1] += sum over rows of dy.
//   sequence_embedding(T [V, D], ids [B, L], Pos [>= L, D], s)
//       y[b, t] = (ids[b, t] != 0) (s T[ids[b, t]] + Pos[t])   -> [B, L, D]
//       (SASRec's item embedding * sqrt(D) + learned position embedding, padding positions zeroed);
//       dT[id] += s dy (non-padding ids),  dPos[t] += sum_b of dy[b, t] over non-padding positions.
//   packed_embedding(T, ids, Pos, s, rows)   the same at the packed rows only -> [N, D].
//   unpack_rows(x [N, D], rows, fill [D])    back to [B, L, D], padding positions = fill (or 0);
//       dx[i] += dy[b, t of i],  dfill += sum of dy over the padding positions.
//   mask_positions(x [B, L, D], ids [B, L])   y = x with the rows of padding ids (0) zeroed;
//       dx += dy masked the same way.
//   parallel_dropout(x, p, training, rng)   inverted dropout, y = x keep / (1 - p), dx += dy keep / (1 - p),
//       like ops/activation.hpp's dropout but with the mask drawn in parallel: one seed from rng,
//       then Rng(seed).fork(block) per block of 4096 elements and 16-bit uniforms, four per draw.
//       The serial one-double-per-element mask cost 25 ms per [128, 200, 64] activation, more than
//       the GEMM next to it; a transformer block has three of them.
//
// Why fused: with L = 200 and one or two heads, composing attention from matmul / softmax ops
// materialises S, P, Pd and their gradients as separate [B, H, L, L] tensors (each 20 MB at
// B = 128) and walks them many times. Here every (b, h) pair runs on one thread over blocks of
// kAttnRowBlock query rows: the scores of a block are turned into P in place while they are in
// cache, the dropped weights Pd and the backward's dS live in a small per-thread buffer, and only
// P (needed by the backward) and the dropout keep flags (one byte per weight) are stored. Under a
// causal mask a block of rows [r0, r1) touches keys [0, r1) only, which skips ~40% of the
// products at L = 200. Work is split over (b, h) pairs in static chunks and every pair writes
// its own slices of out, dQ, dK, dV (the padded keys' gradient goes to a per-pair buffer summed
// in pair order): results are bit-identical for a given thread count. Dropout draws from
// Rng(seed).fork(b H + h) with the seed drawn once from o.rng, so the mask does not depend on
// the threads either. PackedRows and every buffer live in the step arena.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <Eigen/Core>

#include "rechub/core/rng.hpp"
#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/gemm.hpp"
#include "rechub/ops/index.hpp"

namespace rechub {

/// How attention() reads its inputs and which keys each query may see.
struct AttentionOptions {
  int heads = 1;
  bool causal = false;        // query i sees keys j <= i (needs Lq == Lk)
  Tensor key_mask;            // optional int32 [B, Lk]: 0 hides key j of row b (an id column works)
  float dropout = 0.0f;       // on the attention weights, training only
  bool training = false;
  Rng* rng = nullptr;         // dropout draws (global_rng() when null)
  float scale = 0.0f;         // 0: 1 / sqrt(head dim)
  std::int64_t dim = 0;       // model width D = heads * head dim; 0: the width of q minus q_offset
  std::int64_t q_offset = 0, k_offset = 0, v_offset = 0;  // first column of head 0 in q, k, v
  // attention_packed only: also attend to the padded keys the padded layout would show (causal:
  // those before the query; else all of its row). Their key / value are pad_kv's columns
  // [pad_k_offset, +D) / [pad_v_offset, +D) (the projection bias: a padded input row is 0), or
  // zero vectors when pad_kv is undefined. Torch-RecHub's SASRec attends to them.
  bool attend_padding = false;
  Var pad_kv;
  std::int64_t pad_k_offset = 0, pad_v_offset = 0;
};

/// The non-padding positions of an id batch [B, L], packed row after row: row b owns packed
/// rows [begin[b], begin[b+1]) in position order. Arena-backed: valid until end_step().
struct PackedRows {
  std::int64_t B = 0, L = 0, N = 0;
  const std::int64_t* begin = nullptr;       // [B + 1]
  const std::int32_t* index = nullptr;       // [N] flat position b * L + t of each packed row
  const std::int32_t* pad_before = nullptr;  // [N] padding positions before t in its row
  const std::int32_t* pad_total = nullptr;   // [N] padding positions in its row
  std::int64_t count(std::int64_t b) const { return begin[b + 1] - begin[b]; }
};

/// Packs the positions of `ids` [B, L] whose id is not 0.
inline PackedRows pack_rows(const Tensor& ids) {
  detail::check_cpu("pack_rows", ids);
  detail::check_i32("pack_rows", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2, "pack_rows: ids must be [B, L], got ", ids.shape().str());
  PackedRows r;
  r.B = ids.dim(0);
  r.L = ids.dim(1);
  const std::int32_t* id = ids.i32();
  for (std::int64_t i = 0; i < ids.numel(); ++i) r.N += id[i] != 0;
  auto* begin = static_cast<std::int64_t*>(step_arena().allocate(static_cast<std::size_t>(r.B + 1) * sizeof(std::int64_t)));
  auto* ints = static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(3 * r.N + 1) * sizeof(std::int32_t)));
  std::int32_t *index = ints, *before = ints + r.N, *total = ints + 2 * r.N;
  std::int64_t n = 0;
  for (std::int64_t b = 0; b < r.B; ++b) {
    begin[b] = n;
    std::int32_t pads = 0;
    for (std::int64_t t = 0; t < r.L; ++t) {
      if (id[b * r.L + t] == 0) {
        ++pads;
        continue;
      }
      index[n] = static_cast<std::int32_t>(b * r.L + t);
      before[n++] = pads;
    }
    for (std::int64_t i = begin[b]; i < n; ++i) total[i] = pads;
  }
  begin[r.B] = n;
  r.begin = begin;
  r.index = index;
  r.pad_before = before;
  r.pad_total = total;
  return r;
}

/// Per row of ids [B, L]: the column of its last non-zero id, L - 1 for a row of padding
/// (int32 [B], step arena). For pre-padded histories that is L - 1, for post-padded len - 1.
inline Tensor last_valid_positions(const Tensor& ids) {
  detail::check_i32("last_valid_positions", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2 && ids.dim(1) >= 1, "last_valid_positions: ids must be [B, L], got ",
                     ids.shape().str());
  const std::int64_t B = ids.dim(0), L = ids.dim(1);
  Tensor last = step_arena().tensor({B}, DType::i32);
  for (std::int64_t b = 0; b < B; ++b) {
    std::int64_t t = L - 1;
    while (t > 0 && ids.i32()[b * L + t] == 0) --t;
    last.i32()[b] = static_cast<std::int32_t>(ids.i32()[b * L + t] == 0 ? L - 1 : t);
  }
  return last;
}

/// Per row b: its last packed row, or -1 when the row is all padding (int32 [B], step arena).
inline Tensor last_packed_rows(const PackedRows& rows) {
  Tensor last = step_arena().tensor({rows.B}, DType::i32);
  for (std::int64_t b = 0; b < rows.B; ++b)
    last.i32()[b] = rows.count(b) > 0 ? static_cast<std::int32_t>(rows.begin[b + 1] - 1) : -1;
  return last;
}

namespace detail {

/// Query rows per block of the fused attention (scores of a block stay in a per-thread buffer).
constexpr std::int64_t kAttnRowBlock = 64;

/// Per-thread scratch of a parallel_for body: one buffer of `per` floats from the step arena for
/// each thread of the team parallel_for will start. When the caller is itself inside a
/// parallel region, parallel_for runs inline, so one slot is enough and slot 0 is used.
struct ThreadScratch {
  float* base = nullptr;
  std::int64_t per = 0;
  bool nested = false;
  static ThreadScratch make(std::int64_t per) {
    ThreadScratch s;
    s.per = per;
#ifdef _OPENMP
    s.nested = omp_in_parallel() != 0;
#endif
    s.base = step_arena().tensor({(s.nested ? 1 : std::int64_t(num_threads())) * per}).f32();
    return s;
  }
  float* get() const {
#ifdef _OPENMP
    if (!nested) return base + std::int64_t(omp_get_thread_num()) * per;
#endif
    return base;
  }
};

/// keep[i] = 1 with probability 1 - p, else 0, for i in [0, n): 16-bit uniforms, four per draw
/// of `rng` (p is resolved to 1/65536).
inline void draw_keep_flags(std::uint8_t* keep, std::int64_t n, Rng& rng, float p) {
  const std::uint32_t threshold = static_cast<std::uint32_t>(std::lround(double(p) * 65536.0));
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const std::uint64_t r = rng.next_u64();
    keep[i] = (r & 0xFFFFu) >= threshold;
    keep[i + 1] = ((r >> 16) & 0xFFFFu) >= threshold;
    keep[i + 2] = ((r >> 32) & 0xFFFFu) >= threshold;
    keep[i + 3] = (r >> 48) >= threshold;
  }
  if (i < n) {
    std::uint64_t r = rng.next_u64();
    for (; i < n; ++i, r >>= 16) keep[i] = (r & 0xFFFFu) >= threshold;
  }
}

/// Sizes and buffers of one attention call, kept in the step arena for its backward. A (b, h)
/// pair reads nq query rows and nk key rows starting at row b * Lq / b * Lk (padded layout) or at
/// rows[b] (packed layout: queries and keys are the same rows).
struct AttnCtx {
  std::int64_t B, H, dh, D, Wq, Wk, Wv, qo, ko, vo;
  std::int64_t Lq, Lk;             // padded layout
  const std::int64_t* rows;        // packed layout: [B + 1] row offsets, else null
  const std::int64_t* poff;        // packed layout: [B] offset of row b's weights in P (sum of H n^2)
  float scale, keep_scale;         // keep_scale = 1 / (1 - p)
  bool causal, dropout;
  const std::int32_t* key_mask;    // padded layout: [B, Lk] or null
  // Padded keys a packed query still attends to (Torch-RecHub's SASRec has no key mask): all
  // equal, so they act as one extra key of multiplicity pad_count[i] with score + log(count).
  const std::int32_t* pad_count;   // [N] or null
  const float *pad_k, *pad_v;      // that key / value (head h at + h dh); null = zero vectors
  float* P;                        // softmax weights per pair [nq, nk] (rows of a block: keys [0, c1) only)
  std::uint8_t* keep;              // dropout keep flags, laid out like P, or null
  float* P0;                       // [N, H] weight of the padded keys, or null
  float* keep0;                    // [N, H] their kept share / (1 - p) under dropout, or null
};

/// Where one (b, h) pair's operands live.
struct AttnPair {
  std::int64_t b, h, nq, nk, row0;  // row0: first packed row (packed layout)
  std::int64_t q, k, v, o;          // element offsets of head h's first row in q, k, v, out
  float* P;
  std::uint8_t* keep;
  const std::int32_t* kmask;
};

inline AttnPair attn_pair(const AttnCtx& c, std::int64_t it) {
  AttnPair p{};
  p.b = it / c.H;
  p.h = it % c.H;
  std::int64_t qr, kr, poff;
  if (c.rows) {
    p.row0 = c.rows[p.b];
    p.nq = p.nk = c.rows[p.b + 1] - p.row0;
    qr = kr = p.row0;
    poff = c.poff[p.b] + p.h * p.nq * p.nk;
  } else {
    p.nq = c.Lq;
    p.nk = c.Lk;
    qr = p.b * c.Lq;
    kr = p.b * c.Lk;
    poff = it * c.Lq * c.Lk;
  }
  p.q = qr * c.Wq + c.qo + p.h * c.dh;
  p.k = kr * c.Wk + c.ko + p.h * c.dh;
  p.v = kr * c.Wv + c.vo + p.h * c.dh;
  p.o = qr * c.D + p.h * c.dh;
  p.P = c.P + poff;
  p.keep = c.dropout ? c.keep + poff : nullptr;
  p.kmask = c.key_mask ? c.key_mask + p.b * c.Lk : nullptr;
  return p;
}

inline float attn_dot(const float* a, const float* b, std::int64_t n) {
  float s = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

/// Masked softmax of one score row s[0, c1) in place; entries >= end or hidden by the key mask
/// become 0. `extra` (> -inf) is the score of the padded keys, whose weight is returned in *p0.
/// A row with no visible key becomes all 0.
inline void attn_softmax_row(float* s, std::int64_t end, std::int64_t c1, const std::int32_t* kmask, float extra,
                             float* p0) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (kmask)
    for (std::int64_t j = 0; j < end; ++j)
      if (kmask[j] == 0) s[j] = kNegInf;
  Eigen::Map<Eigen::ArrayXf> row(s, end);
  const float m = std::max(end > 0 ? row.maxCoeff() : kNegInf, extra);
  if (m == kNegInf) {
    std::fill(s, s + c1, 0.0f);
    return;
  }
  row = (row - m).exp();
  const float e0 = extra > kNegInf ? std::exp(extra - m) : 0.0f;
  const float inv = 1.0f / (row.sum() + e0);
  row *= inv;
  if (p0) *p0 = e0 * inv;
  std::fill(s + end, s + c1, 0.0f);
}

/// Pd = P * keep / (1 - p) for rows [r0, r1) of one pair into dst [r1 - r0, c1].
inline void attn_dropped(const AttnCtx& c, const AttnPair& a, std::int64_t r0, std::int64_t r1, std::int64_t c1,
                         float* dst) {
  const float s = c.keep_scale;
  for (std::int64_t i = r0; i < r1; ++i) {
    const float* __restrict p = a.P + i * a.nk;
    const std::uint8_t* __restrict k = a.keep + i * a.nk;
    float* __restrict d = dst + (i - r0) * c1;
    for (std::int64_t j = 0; j < c1; ++j) d[j] = p[j] * (s * float(k[j]));
  }
}

/// Draws one pair's dropout: a keep flag per weight and, for the padded keys, the kept share of
/// their pad_count copies (each kept with probability 1 - p), times 1 / (1 - p).
inline void attn_draw_pair(const AttnCtx& c, std::int64_t it, Rng rng, float p) {
  const AttnPair a = attn_pair(c, it);
  draw_keep_flags(a.keep, a.nq * a.nk, rng, p);
  if (!c.keep0) return;
  const std::uint32_t threshold = static_cast<std::uint32_t>(std::lround(double(p) * 65536.0));
  for (std::int64_t i = 0; i < a.nq; ++i) {
    const std::int32_t n = c.pad_count[a.row0 + i];
    std::int32_t kept = 0;
    std::uint64_t r = 0;
    for (std::int32_t j = 0; j < n; ++j, r >>= 16) {
      if ((j & 3) == 0) r = rng.next_u64();
      kept += (r & 0xFFFFu) >= threshold;
    }
    c.keep0[(a.row0 + i) * c.H + a.h] = n > 0 ? c.keep_scale * float(kept) / float(n) : 0.0f;
  }
}

inline void attn_forward_pair(const AttnCtx& c, std::int64_t it, const float* q, const float* k, const float* v,
                              float* out, float* buf) {
  const AttnPair a = attn_pair(c, it);
  const float *Qb = q + a.q, *Kb = k + a.k, *Vb = v + a.v;
  float* Ob = out + a.o;
  const float* k0 = c.pad_k ? c.pad_k + a.h * c.dh : nullptr;
  const float* v0 = c.pad_v ? c.pad_v + a.h * c.dh : nullptr;
  for (std::int64_t r0 = 0; r0 < a.nq; r0 += kAttnRowBlock) {
    const std::int64_t r1 = std::min(a.nq, r0 + kAttnRowBlock), rb = r1 - r0;
    const std::int64_t c1 = c.causal ? r1 : a.nk;
    float* S = a.P + r0 * a.nk;
    gemm_serial(false, true, rb, c1, c.dh, c.scale, Qb + r0 * c.Wq, c.Wq, Kb, c.Wk, 0.0f, S, a.nk);
    for (std::int64_t i = r0; i < r1; ++i) {
      float extra = -std::numeric_limits<float>::infinity();
      float* p0 = nullptr;
      if (c.pad_count && c.pad_count[a.row0 + i] > 0) {
        extra = (k0 ? c.scale * attn_dot(Qb + i * c.Wq, k0, c.dh) : 0.0f) + std::log(float(c.pad_count[a.row0 + i]));
        p0 = c.P0 + (a.row0 + i) * c.H + a.h;
      } else if (c.P0) {
        c.P0[(a.row0 + i) * c.H + a.h] = 0.0f;
      }
      attn_softmax_row(a.P + i * a.nk, c.causal ? i + 1 : a.nk, c1, a.kmask, extra, p0);
    }
    const float* A = S;
    std::int64_t lda = a.nk;
    if (a.keep) {
      attn_dropped(c, a, r0, r1, c1, buf);
      A = buf;
      lda = c1;
    }
    gemm_serial(false, false, rb, c.dh, c1, 1.0f, A, lda, Vb, c.Wv, 0.0f, Ob + r0 * c.D, c.D);
    if (c.P0 && v0)
      for (std::int64_t i = r0; i < r1; ++i) {
        const std::int64_t x = (a.row0 + i) * c.H + a.h;
        const float w = c.P0[x] * (c.keep0 ? c.keep0[x] : 1.0f);
        if (w == 0.0f) continue;
        float* o = Ob + i * c.D;
        for (std::int64_t d = 0; d < c.dh; ++d) o[d] += w * v0[d];
      }
  }
}

/// One pair's backward; dpad (2 dh floats, this pair's own) receives the padded key's and
/// value's gradients.
inline void attn_backward_pair(const AttnCtx& c, std::int64_t it, const float* q, const float* k, const float* v,
                               const float* dout, float* dq, float* dk, float* dv, float* buf, float* dpad) {
  const AttnPair a = attn_pair(c, it);
  const float *Qb = q + a.q, *Kb = k + a.k, *Vb = v + a.v;
  const float* dOb = dout + a.o;
  const float* k0 = c.pad_k ? c.pad_k + a.h * c.dh : nullptr;
  const float* v0 = c.pad_v ? c.pad_v + a.h * c.dh : nullptr;
  for (std::int64_t r0 = 0; r0 < a.nq; r0 += kAttnRowBlock) {
    const std::int64_t r1 = std::min(a.nq, r0 + kAttnRowBlock), rb = r1 - r0;
    const std::int64_t c1 = c.causal ? r1 : a.nk;
    // Pd of the block (P itself without dropout), then dV += Pd^T dO.
    const float* A = a.P + r0 * a.nk;
    std::int64_t lda = a.nk;
    if (a.keep) {
      attn_dropped(c, a, r0, r1, c1, buf);
      A = buf;
      lda = c1;
    }
    if (dv) gemm_serial(true, false, c1, c.dh, rb, 1.0f, A, lda, dOb + r0 * c.D, c.D, 1.0f, dv + a.v, c.Wv);
    // dPd = dO V^T, then dS = Pd dPd - P c in place (c over the real and the padded keys).
    float* G = buf + kAttnRowBlock * a.nk;
    gemm_serial(false, true, rb, c1, c.dh, 1.0f, dOb + r0 * c.D, c.D, Vb, c.Wv, 0.0f, G, c1);
    for (std::int64_t i = r0; i < r1; ++i) {
      const std::int64_t end = c.causal ? i + 1 : a.nk;
      const float* pd = A + (i - r0) * lda;
      const float* p = a.P + i * a.nk;
      float* g = G + (i - r0) * c1;
      float ci = 0.0f;
      for (std::int64_t j = 0; j < end; ++j) {
        g[j] *= pd[j];
        ci += g[j];
      }
      const std::int64_t x = (a.row0 + i) * c.H + a.h;
      const float p0 = c.P0 ? c.P0[x] : 0.0f;
      float g0 = 0.0f;  // Pd0 dPd0 of the padded keys
      if (p0 != 0.0f) {
        const float pd0 = p0 * (c.keep0 ? c.keep0[x] : 1.0f);
        const float* dOi = dOb + i * c.D;
        if (v0) {
          g0 = pd0 * attn_dot(dOi, v0, c.dh);
          for (std::int64_t d = 0; d < c.dh; ++d) dpad[c.dh + d] += pd0 * dOi[d];
        }
        ci += g0;
      }
      for (std::int64_t j = 0; j < end; ++j) g[j] -= p[j] * ci;
      std::fill(g + end, g + c1, 0.0f);
      if (p0 != 0.0f && k0) {
        const float ds0 = c.scale * (g0 - p0 * ci);
        if (dq)
          for (std::int64_t d = 0; d < c.dh; ++d) dq[a.q + i * c.Wq + d] += ds0 * k0[d];
        const float* Qi = Qb + i * c.Wq;
        for (std::int64_t d = 0; d < c.dh; ++d) dpad[d] += ds0 * Qi[d];
      }
    }
    if (dq) gemm_serial(false, false, rb, c.dh, c1, c.scale, G, c1, Kb, c.Wk, 1.0f, dq + a.q + r0 * c.Wq, c.Wq);
    if (dk) gemm_serial(true, false, c1, c.dh, rb, c.scale, G, c1, Qb + r0 * c.Wq, c.Wq, 1.0f, dk + a.k, c.Wk);
  }
}

template <class T>
T* arena_new(const T& value) {
  T* p = static_cast<T*>(step_arena().allocate(sizeof(T)));
  *p = value;
  return p;
}

/// Validates q, k, v columns against the options; returns D.
inline std::int64_t attn_check(const char* op, const Tensor& Q, const Tensor& K, const Tensor& V,
                               const AttentionOptions& o) {
  check_cpu(op, Q, K, V);
  check_f32(op, Q, "q");
  check_f32(op, K, "k");
  check_f32(op, V, "v");
  RECHUB_CHECK_AS(ConfigError, o.heads >= 1, op, ": heads must be >= 1, got ", o.heads);
  const std::int64_t D = o.dim > 0 ? o.dim : Q.dim(-1) - o.q_offset, H = o.heads;
  RECHUB_CHECK_SHAPE(D > 0 && D % H == 0, op, ": width ", D, " is not a multiple of ", H, " heads");
  RECHUB_CHECK_SHAPE(o.q_offset >= 0 && o.q_offset + D <= Q.dim(-1) && o.k_offset >= 0 && o.k_offset + D <= K.dim(-1) &&
                         o.v_offset >= 0 && o.v_offset + D <= V.dim(-1),
                     op, ": columns [", o.q_offset, ", +", D, "), [", o.k_offset, ", +", D, "), [", o.v_offset, ", +",
                     D, ") do not fit q ", Q.shape().str(), ", k ", K.shape().str(), ", v ", V.shape().str());
  RECHUB_CHECK_AS(ConfigError, o.dropout >= 0.0f && o.dropout < 1.0f, op, ": dropout must be in [0, 1), got ",
                  o.dropout);
  return D;
}

/// Fills the parts of the context both layouts share.
inline void attn_common(AttnCtx& c, const Tensor& Q, const Tensor& K, const Tensor& V, std::int64_t D,
                        const AttentionOptions& o) {
  c.H = o.heads;
  c.dh = D / o.heads;
  c.D = D;
  c.Wq = Q.dim(-1), c.Wk = K.dim(-1), c.Wv = V.dim(-1);
  c.qo = o.q_offset, c.ko = o.k_offset, c.vo = o.v_offset;
  c.scale = o.scale > 0.0f ? o.scale : 1.0f / std::sqrt(float(c.dh));
  c.causal = o.causal;
  c.dropout = o.training && o.dropout > 0.0f;
  c.keep_scale = c.dropout ? 1.0f / (1.0f - o.dropout) : 1.0f;
}

/// Runs the pairs forward, and records the backward. `pad` is the Var behind pad_k / pad_v (or undefined).
inline Var attn_run(const char* op, const Var& q, const Var& k, const Var& v, const Var& pad, AttnCtx& c,
                    const Shape& out_shape, std::int64_t max_keys, std::int64_t keep_bytes, std::int64_t cost,
                    const AttentionOptions& o) {
  Var out = pad.defined() ? make_output(op, out_shape, DType::f32, q, k, v, pad) : make_output(op, out_shape, DType::f32, q, k, v);
  const std::int64_t pairs = c.B * c.H;
  if (c.dropout) {
    Rng& rng = o.rng ? *o.rng : global_rng();
    const Rng base(rng.next_u64());
    c.keep = static_cast<std::uint8_t*>(step_arena().allocate(static_cast<std::size_t>(keep_bytes)));
    parallel_for(pairs, cost / 8 + 1, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t it = s; it < e; ++it) attn_draw_pair(c, it, base.fork(static_cast<std::uint64_t>(it)), o.dropout);
    });
  }
  const float *pq = q.value().f32(), *pk = k.value().f32(), *pv = v.value().f32();
  float* po = out.value().f32();
  const auto scratch = ThreadScratch::make(kAttnRowBlock * max_keys);
  parallel_for(pairs, cost, [&](std::int64_t s, std::int64_t e) {
    float* buf = scratch.get();
    for (std::int64_t it = s; it < e; ++it) attn_forward_pair(c, it, pq, pk, pv, po, buf);
  });
  if (!out.requires_grad()) return out;
  const AttnCtx* ctx = arena_new(c);
  const std::int64_t pk_off = o.pad_k_offset, pv_off = o.pad_v_offset;
  record(out, [q, k, v, pad, out, ctx, cost, max_keys, pk_off, pv_off] {
    const AttnCtx& c = *ctx;
    // grad_acc() allocates lazily: fetch every buffer here, before the threads start. Packed
    // inputs (k and v the same Var) share a buffer, written at disjoint columns.
    float* dq = q.requires_grad() ? q.grad_acc().f32() : nullptr;
    float* dk = k.requires_grad() ? k.grad_acc().f32() : nullptr;
    float* dv = v.requires_grad() ? v.grad_acc().f32() : nullptr;
    const float *pq = q.value().f32(), *pk = k.value().f32(), *pv = v.value().f32(), *g = out.grad().f32();
    const std::int64_t pairs = c.B * c.H;
    float* dpad = step_arena().zeros({pairs * 2 * c.dh}).f32();  // per pair: d pad_k, d pad_v
    const auto scratch = ThreadScratch::make(2 * kAttnRowBlock * max_keys);
    parallel_for(pairs, 2 * cost, [&](std::int64_t s, std::int64_t e) {
      float* buf = scratch.get();
      for (std::int64_t it = s; it < e; ++it)
        attn_backward_pair(c, it, pq, pk, pv, g, dq, dk, dv, buf, dpad + it * 2 * c.dh);
    });
    if (pad.defined() && pad.requires_grad()) {
      float* dp = pad.grad_acc().f32();
      for (std::int64_t it = 0; it < pairs; ++it) {  // serial, in pair order: deterministic
        const std::int64_t h = it % c.H;
        for (std::int64_t d = 0; d < c.dh; ++d) {
          dp[pk_off + h * c.dh + d] += dpad[it * 2 * c.dh + d];
          dp[pv_off + h * c.dh + d] += dpad[it * 2 * c.dh + c.dh + d];
        }
      }
    }
  });
  return out;
}

}  // namespace detail

/// Multi-head scaled dot-product attention with causal / key masks and attention-weight dropout
/// (see the header comment for shapes and the packed-column layout) -> [B, Lq, D].
inline Var attention(const Var& q, const Var& k, const Var& v, const AttentionOptions& o = {}) {
  const Tensor &Q = q.value(), &K = k.value(), &V = v.value();
  RECHUB_CHECK_SHAPE(Q.ndim() == 3 && K.ndim() == 3 && V.ndim() == 3, "attention: q, k, v must be [B, L, W], got ",
                     Q.shape().str(), ", ", K.shape().str(), ", ", V.shape().str());
  const std::int64_t D = detail::attn_check("attention", Q, K, V, o);
  const std::int64_t B = Q.dim(0), Lq = Q.dim(1), Lk = K.dim(1);
  RECHUB_CHECK_SHAPE(K.dim(0) == B && V.dim(0) == B && V.dim(1) == Lk, "attention: q ", Q.shape().str(), ", k ",
                     K.shape().str(), ", v ", V.shape().str(), " disagree on batch or key length");
  RECHUB_CHECK_SHAPE(!o.causal || Lq == Lk, "attention: a causal mask needs as many queries as keys, got ", Lq, " and ",
                     Lk);
  RECHUB_CHECK_AS(ConfigError, !o.attend_padding, "attention: attend_padding applies to attention_packed only");
  detail::AttnCtx c{};
  detail::attn_common(c, Q, K, V, D, o);
  c.B = B, c.Lq = Lq, c.Lk = Lk;
  if (o.key_mask.defined()) {
    detail::check_cpu("attention", o.key_mask);
    detail::check_i32("attention", o.key_mask, "key_mask");
    RECHUB_CHECK_SHAPE(o.key_mask.ndim() == 2 && o.key_mask.dim(0) == B && o.key_mask.dim(1) == Lk,
                       "attention: key_mask ", o.key_mask.shape().str(), " does not match [", B, ", ", Lk, "]");
    c.key_mask = detail::arena_copy(o.key_mask.i32(), B * Lk);
  }
  c.P = step_arena().tensor({B * c.H * Lq * Lk}).f32();
  return detail::attn_run("attention", q, k, v, Var(), c, Shape{B, Lq, D}, Lk, B * c.H * Lq * Lk,
                          2 * Lq * Lk * c.dh + 8 * Lq * Lk, o);
}

/// attention() over packed rows (pack_rows): q, k, v [N, W] hold only the non-padding positions
/// of a [B, L] batch, and every row attends within its own positions. With o.attend_padding a
/// query also attends to the padded keys it would have seen in the padded layout (see the header
/// comment) -> [N, D].
inline Var attention_packed(const Var& q, const Var& k, const Var& v, const PackedRows& rows,
                            const AttentionOptions& o = {}) {
  const Tensor &Q = q.value(), &K = k.value(), &V = v.value();
  RECHUB_CHECK_SHAPE(Q.ndim() == 2 && K.ndim() == 2 && V.ndim() == 2, "attention_packed: q, k, v must be [N, W], got ",
                     Q.shape().str(), ", ", K.shape().str(), ", ", V.shape().str());
  const std::int64_t D = detail::attn_check("attention_packed", Q, K, V, o);
  RECHUB_CHECK_SHAPE(Q.dim(0) == rows.N && K.dim(0) == rows.N && V.dim(0) == rows.N, "attention_packed: q ",
                     Q.shape().str(), ", k ", K.shape().str(), ", v ", V.shape().str(), " do not hold the ", rows.N,
                     " packed rows");
  RECHUB_CHECK_AS(ConfigError, !o.key_mask.defined(), "attention_packed: packed rows have no padding to mask");
  detail::AttnCtx c{};
  detail::attn_common(c, Q, K, V, D, o);
  c.B = rows.B;
  c.rows = rows.begin;
  auto* poff = static_cast<std::int64_t*>(step_arena().allocate(static_cast<std::size_t>(rows.B) * sizeof(std::int64_t)));
  std::int64_t total = 0, max_n = 1, cost = 0;
  for (std::int64_t b = 0; b < rows.B; ++b) {
    const std::int64_t n = rows.begin[b + 1] - rows.begin[b];
    poff[b] = total;
    total += c.H * n * n;
    max_n = std::max(max_n, n);
    cost += (2 * c.dh + 8) * n * n;
  }
  c.poff = poff;
  c.P = step_arena().tensor({std::max<std::int64_t>(total, 1)}).f32();
  Var pad;
  if (o.attend_padding) {
    c.pad_count = o.causal ? rows.pad_before : rows.pad_total;
    c.P0 = step_arena().tensor({std::max<std::int64_t>(rows.N * c.H, 1)}).f32();
    if (c.dropout) c.keep0 = step_arena().tensor({std::max<std::int64_t>(rows.N * c.H, 1)}).f32();
    if (o.pad_kv.defined()) {
      const Tensor& Pk = o.pad_kv.value();
      detail::check_cpu("attention_packed", Pk);
      detail::check_f32("attention_packed", Pk, "pad_kv");
      RECHUB_CHECK_SHAPE(Pk.ndim() == 1 && o.pad_k_offset >= 0 && o.pad_k_offset + D <= Pk.dim(0) &&
                             o.pad_v_offset >= 0 && o.pad_v_offset + D <= Pk.dim(0),
                         "attention_packed: pad_kv ", Pk.shape().str(), " has no columns [", o.pad_k_offset, ", +", D,
                         ") and [", o.pad_v_offset, ", +", D, ")");
      c.pad_k = Pk.f32() + o.pad_k_offset;
      c.pad_v = Pk.f32() + o.pad_v_offset;
      pad = o.pad_kv;
    }
  }
  return detail::attn_run("attention_packed", q, k, v, pad, c, Shape{rows.N, D}, max_n, std::max<std::int64_t>(total, 1),
                          rows.B > 0 ? cost / rows.B + 1 : 1, o);
}

/// y = x W[begin:end]^T + b[begin:end] over the last dim of x (rows of a packed projection).
inline Var in_projection(const Var& x, const Var& weight, const Var& bias, std::int64_t begin, std::int64_t end) {
  const Tensor &X = x.value(), &W = weight.value();
  detail::check_cpu("in_projection", X, W);
  detail::check_f32("in_projection", X, "input");
  detail::check_f32("in_projection", W, "weight");
  RECHUB_CHECK_SHAPE(W.ndim() == 2 && X.ndim() >= 1 && X.dim(-1) == W.dim(1), "in_projection: input ",
                     X.shape().str(), " does not match weight ", W.shape().str());
  RECHUB_CHECK_SHAPE(0 <= begin && begin < end && end <= W.dim(0), "in_projection: rows [", begin, ", ", end,
                     ") out of range for weight ", W.shape().str());
  if (bias.defined())
    RECHUB_CHECK_SHAPE(bias.value().numel() == W.dim(0), "in_projection: bias ", bias.shape().str(), " for weight ",
                       W.shape().str());
  const std::int64_t rows = X.rows(), in = W.dim(1), n = end - begin;
  Shape ys = X.shape();
  ys[-1] = n;
  Var out = bias.defined() ? detail::make_output("in_projection", ys, DType::f32, x, weight, bias)
                           : detail::make_output("in_projection", ys, DType::f32, x, weight);
  float* Y = out.value().f32();
  const float* Wb = W.f32() + begin * in;
  detail::gemm_bias(false, true, rows, n, in, 1.0f, X.f32(), in, Wb, in,
                    bias.defined() ? bias.value().f32() + begin : nullptr, Y, n);
  detail::record(out, [x, weight, bias, out, rows, in, n, begin] {
    const float* dY = out.grad().f32();
    if (x.requires_grad())
      detail::gemm(false, false, rows, in, n, 1.0f, dY, n, weight.value().f32() + begin * in, in, 1.0f,
                   x.grad_acc().f32(), in);
    if (weight.requires_grad())
      detail::gemm(true, false, n, in, rows, 1.0f, dY, n, x.value().f32(), in, 1.0f,
                   weight.grad_acc().f32() + begin * in, in);
    if (bias.defined() && bias.requires_grad()) {
      float* db = bias.grad_acc().f32() + begin;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < n; ++j) db[j] += dY[r * n + j];
    }
  });
  return out;
}

/// (ids != 0) * (scale * table[ids] + pos[t]) -> [B, L, D]: token plus learned position embedding.
inline Var sequence_embedding(const Var& table, const Tensor& ids, const Var& pos, float scale) {
  const Tensor &T = table.value(), &P = pos.value();
  detail::check_cpu("sequence_embedding", T, ids, P);
  detail::check_table("sequence_embedding", T);
  detail::check_i32("sequence_embedding", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2, "sequence_embedding: ids must be [B, L], got ", ids.shape().str());
  const std::int64_t B = ids.dim(0), L = ids.dim(1), D = T.dim(1);
  RECHUB_CHECK_SHAPE(P.ndim() == 2 && P.dim(1) == D && P.dim(0) >= L, "sequence_embedding: position table ",
                     P.shape().str(), " does not cover ids ", ids.shape().str(), " of width ", D);
  detail::check_ids("sequence_embedding", ids.i32(), B * L, T);
  Var out = detail::make_output("sequence_embedding", Shape{B, L, D}, DType::f32, table, pos);
  const std::int32_t* id = ids.i32();
  const float *pt = T.f32(), *pp = P.f32();
  float* y = out.value().f32();
  parallel_for(B * L, 2 * D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t r = s; r < e; ++r) {
      float* yr = y + r * D;
      if (id[r] == 0) {
        std::fill(yr, yr + D, 0.0f);
        continue;
      }
      const float *tr = pt + std::int64_t(id[r]) * D, *pr = pp + (r % L) * D;
      for (std::int64_t j = 0; j < D; ++j) yr[j] = scale * tr[j] + pr[j];
    }
  });
  if (!out.requires_grad()) return out;
  const std::int32_t* saved = detail::arena_copy(id, B * L);
  detail::record(out, [table, pos, out, saved, B, L, D, scale] {
    const float* g = out.grad().f32();
    if (table.requires_grad()) {
      float* sc = step_arena().tensor({B * L}).f32();
      std::fill(sc, sc + B * L, scale);
      detail::scatter_add_rows(table.grad_acc().f32(), table.value().dim(0), D, saved, B * L, g, 1, sc, 0);
      detail::mark_rows(table, saved, B * L, 0);
    }
    if (pos.requires_grad()) {
      float* dp = pos.grad_acc().f32();
      parallel_for(L, B * D, [&](std::int64_t t0, std::int64_t t1) {
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t t = t0; t < t1; ++t) {
            if (saved[b * L + t] == 0) continue;
            const float* gr = g + (b * L + t) * D;
            float* d = dp + t * D;
            for (std::int64_t j = 0; j < D; ++j) d[j] += gr[j];
          }
      });
    }
  });
  return out;
}

/// Inverted dropout with a mask drawn in parallel blocks (see the header comment); x itself when
/// !training or p == 0.
inline Var parallel_dropout(const Var& x, float p, bool training, Rng& rng) {
  RECHUB_CHECK_AS(ConfigError, p >= 0.0f && p < 1.0f, "parallel_dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0.0f) return x;
  const Tensor& X = x.value();
  detail::check_cpu("parallel_dropout", X);
  detail::check_f32("parallel_dropout", X, "input");
  constexpr std::int64_t kBlock = 4096;
  const std::int64_t n = X.numel(), blocks = (n + kBlock - 1) / kBlock;
  Var out = detail::make_output("parallel_dropout", X.shape(), DType::f32, x);
  auto* keep = static_cast<std::uint8_t*>(step_arena().allocate(static_cast<std::size_t>(n)));
  const Rng base(rng.next_u64());
  const float scale = 1.0f / (1.0f - p);
  const float* px = X.f32();
  float* py = out.value().f32();
  parallel_for(blocks, 4 * kBlock, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t blk = b0; blk < b1; ++blk) {
      const std::int64_t i0 = blk * kBlock, len = std::min(kBlock, n - i0);
      Rng r = base.fork(static_cast<std::uint64_t>(blk));
      detail::draw_keep_flags(keep + i0, len, r, p);
      for (std::int64_t i = i0; i < i0 + len; ++i) py[i] = px[i] * (scale * float(keep[i]));
    }
  });
  detail::record(out, [x, out, n, scale, keep] {
    float* dx = x.grad_acc().f32();
    const float* g = out.grad().f32();
    parallel_for(n, 2, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i) dx[i] += g[i] * (scale * float(keep[i]));
    });
  });
  return out;
}

/// sequence_embedding at the packed rows only: y[i] = scale * table[ids[index_i]] + pos[t_i] -> [N, D].
inline Var packed_embedding(const Var& table, const Tensor& ids, const Var& pos, float scale, const PackedRows& rows) {
  const Tensor &T = table.value(), &P = pos.value();
  detail::check_cpu("packed_embedding", T, ids, P);
  detail::check_table("packed_embedding", T);
  detail::check_i32("packed_embedding", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2 && ids.dim(0) == rows.B && ids.dim(1) == rows.L, "packed_embedding: ids ",
                     ids.shape().str(), " are not the [", rows.B, ", ", rows.L, "] the rows were packed from");
  const std::int64_t N = rows.N, L = rows.L, D = T.dim(1);
  RECHUB_CHECK_SHAPE(P.ndim() == 2 && P.dim(1) == D && P.dim(0) >= L, "packed_embedding: position table ",
                     P.shape().str(), " does not cover ids ", ids.shape().str(), " of width ", D);
  detail::check_ids("packed_embedding", ids.i32(), ids.numel(), T);
  Var out = detail::make_output("packed_embedding", Shape{N, D}, DType::f32, table, pos);
  auto* item = static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(N + 1) * sizeof(std::int32_t)));
  for (std::int64_t i = 0; i < N; ++i) item[i] = ids.i32()[rows.index[i]];
  const float *pt = T.f32(), *pp = P.f32();
  float* y = out.value().f32();
  const std::int32_t* index = rows.index;
  parallel_for(N, 2 * D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i = s; i < e; ++i) {
      const float *tr = pt + std::int64_t(item[i]) * D, *pr = pp + (index[i] % L) * D;
      for (std::int64_t j = 0; j < D; ++j) y[i * D + j] = scale * tr[j] + pr[j];
    }
  });
  detail::record(out, [table, pos, out, item, index, N, L, D, scale] {
    const float* g = out.grad().f32();
    if (table.requires_grad()) {
      float* sc = step_arena().tensor({std::max<std::int64_t>(N, 1)}).f32();
      std::fill(sc, sc + N, scale);
      detail::scatter_add_rows(table.grad_acc().f32(), table.value().dim(0), D, item, N, g, 1, sc, -1);
      detail::mark_rows(table, item, N, -1);
    }
    if (pos.requires_grad()) {
      float* dp = pos.grad_acc().f32();
      // Threads own position ranges and scan every row: each dp row is summed in row order.
      parallel_for(L, N * D / std::max<std::int64_t>(L, 1) + N, [&](std::int64_t t0, std::int64_t t1) {
        for (std::int64_t i = 0; i < N; ++i) {
          const std::int64_t t = index[i] % L;
          if (t < t0 || t >= t1) continue;
          for (std::int64_t j = 0; j < D; ++j) dp[t * D + j] += g[i * D + j];
        }
      });
    }
  });
  return out;
}

/// Packed rows x [N, D] back in the padded layout [B, L, D]; padding positions hold `fill` [D]
/// (zeros when undefined). dx[i] += dy[index_i], dfill += sum of dy over padding positions.
inline Var unpack_rows(const Var& x, const PackedRows& rows, const Var& fill = Var()) {
  const Tensor& X = x.value();
  detail::check_cpu("unpack_rows", X);
  detail::check_f32("unpack_rows", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() == 2 && X.dim(0) == rows.N, "unpack_rows: input ", X.shape().str(), " does not hold the ",
                     rows.N, " packed rows");
  const std::int64_t D = X.dim(1), B = rows.B, L = rows.L;
  if (fill.defined())
    RECHUB_CHECK_SHAPE(fill.value().numel() == D, "unpack_rows: fill ", fill.shape().str(), " for rows of width ", D);
  Var out = fill.defined() ? detail::make_output("unpack_rows", Shape{B, L, D}, DType::f32, x, fill)
                           : detail::make_output("unpack_rows", Shape{B, L, D}, DType::f32, x);
  const float* px = X.f32();
  const float* pf = fill.defined() ? fill.value().f32() : nullptr;
  float* y = out.value().f32();
  const std::int64_t* begin = rows.begin;
  const std::int32_t* index = rows.index;
  parallel_for(B, L * D, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      float* yb = y + b * L * D;
      for (std::int64_t t = 0; t < L; ++t) {
        if (pf) std::copy(pf, pf + D, yb + t * D);
        else std::fill(yb + t * D, yb + (t + 1) * D, 0.0f);
      }
      for (std::int64_t i = begin[b]; i < begin[b + 1]; ++i) std::copy(px + i * D, px + (i + 1) * D, y + index[i] * D);
    }
  });
  detail::record(out, [x, fill, out, begin, index, B, L, D] {
    const float* g = out.grad().f32();
    const std::int64_t N = begin[B];
    if (x.requires_grad()) {
      float* dx = x.grad_acc().f32();
      parallel_for(N, D, [&](std::int64_t s, std::int64_t e) {
        for (std::int64_t i = s; i < e; ++i)
          for (std::int64_t j = 0; j < D; ++j) dx[i * D + j] += g[std::int64_t(index[i]) * D + j];
      });
    }
    if (detail::needs_grad(fill)) {
      // Sum over all positions minus the packed ones: serial, in position order.
      float* df = fill.grad_acc().f32();
      std::int64_t next = 0;
      for (std::int64_t r = 0; r < B * L; ++r) {
        if (next < N && index[next] == r) {
          ++next;
          continue;
        }
        for (std::int64_t j = 0; j < D; ++j) df[j] += g[r * D + j];
      }
    }
  });
  return out;
}

/// x [B, L, D] with the positions whose id is 0 (padding) zeroed.
inline Var mask_positions(const Var& x, const Tensor& ids) {
  const Tensor& X = x.value();
  detail::check_cpu("mask_positions", X, ids);
  detail::check_f32("mask_positions", X, "input");
  detail::check_i32("mask_positions", ids, "ids");
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && ids.ndim() == 2 && ids.dim(0) == X.dim(0) && ids.dim(1) == X.dim(1),
                     "mask_positions: input ", X.shape().str(), " does not match ids ", ids.shape().str());
  const std::int64_t R = ids.numel(), D = X.dim(2);
  Var out = detail::make_output("mask_positions", X.shape(), DType::f32, x);
  const std::int32_t* id = ids.i32();
  const float* px = X.f32();
  float* py = out.value().f32();
  parallel_for(R, D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t r = s; r < e; ++r) {
      if (id[r] == 0) std::fill(py + r * D, py + (r + 1) * D, 0.0f);
      else std::copy(px + r * D, px + (r + 1) * D, py + r * D);
    }
  });
  if (!out.requires_grad()) return out;
  const std::int32_t* saved = detail::arena_copy(id, R);
  detail::record(out, [x, out, saved, R, D] {
    float* dx = x.grad_acc().f32();
    const float* g = out.grad().f32();
    parallel_for(R, D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t r = s; r < e; ++r) {
        if (saved[r] == 0) continue;
        for (std::int64_t j = 0; j < D; ++j) dx[r * D + j] += g[r * D + j];
      }
    });
  });
  return out;
}

}  // namespace rechub
