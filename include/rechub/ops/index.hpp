#pragma once
// Index ops: embedding lookups and per-row picks.
//
//   gather_rows(T [V, D], ids int32 S)      y[s] = T[ids[s]]  -> [S..., D];      dT[ids[s]] += dy[s].
//   embedding_bag(T [V, D], ids [B, L], mode, padding_idx)
//       positions with ids == padding_idx (default 0; -1 = none) are skipped: they contribute nothing
//       and send no gradient; let n_b = number of non-padding ids in row b:
//       sum:    y[b] = sum_l T[ids[b,l]]                              dT[ids[b,l]] += dy[b]
//       mean:   y[b] = sum_l T[ids[b,l]] / n_b   (0 when n_b = 0)     dT[ids[b,l]] += dy[b] / n_b
//       concat: y[b,l] = T[ids[b,l]] (0 at padding) -> [B, L, D]      dT[ids[b,l]] += dy[b,l]
//       (mean = Torch-RecHub's AveragePooling: masked sum / number of unmasked positions).
//   select_rows(x [B, K, D], idx int32 [B])  y[b] = x[b, idx[b]] -> [B, D];       dx[b, idx[b]] += dy[b].
//   gather_last(x [R..., M], idx int32 [R..., k])  y[r, j] = x[r, idx[r, j]];      dx[r, idx[r, j]] += dy[r, j].
//   add_gathered_rows(base [B, C], bias [C], {T_k [V_k, C]}, {ids_k int32 [B]})
//       y[b] = base[b] + bias + sum_k T_k[ids_k[b]]  (base, bias optional);  dbase += dy,
//       dbias += sum_b dy[b], dT_k[ids_k[b]] += dy[b]. One pass for a sum of lookups (a layer's
//       pre-activation assembled from per-id partial products, models/two_tower.hpp).
//
// Table gradients are a scatter-add. To stay deterministic without float atomics, the backward
// splits the TABLE's rows into contiguous ranges, one per thread; every thread scans all ids in
// order and adds only those in its range. Each table row is therefore summed by one thread in
// id order: bit-identical results for any thread count. Rows that receive gradient are marked on
// the table (Var::mark_row) for lazy Adam. add_gathered_rows, whose rows are a layer wide, splits
// the columns instead (each element is still summed in row order by one thread).
// Ids are validated in the forward: an id outside [0, V) throws DataError naming the op, the id,
// its position and the table shape. Ids are copied to the step arena, so the caller's id tensor
// need not outlive the step.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

#include "rechub/ops/dispatch.hpp"

namespace rechub {

/// How embedding_bag combines the ids of one row.
enum class BagMode : std::uint8_t { sum, mean, concat };

/// "sum", "mean" or "concat".
inline const char* bag_mode_name(BagMode m) {
  return m == BagMode::sum ? "sum" : m == BagMode::mean ? "mean" : "concat";
}
/// Parses Torch-RecHub's pooling names "sum", "mean", "concat".
inline BagMode bag_mode_from_string(const std::string& s) {
  if (s == "sum") return BagMode::sum;
  if (s == "mean") return BagMode::mean;
  if (s == "concat") return BagMode::concat;
  detail::throw_error<ConfigError>("embedding_bag: pooling '", s, "' is not one of sum, mean, concat");
}

namespace detail {
inline void check_table(const char* op, const Tensor& T) {
  check_f32(op, T, "table");
  RECHUB_CHECK_SHAPE(T.ndim() == 2, op, ": table must be 2-d [V, D], got ", T.shape().str());
}
/// Throws DataError for the first id outside [0, V).
inline void check_ids(const char* op, const std::int32_t* ids, std::int64_t n, const Tensor& T) {
  const std::int64_t V = T.dim(0);
  for (std::int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw_error<DataError>(op, ": id ", ids[i], " at position ", i, " is out of range for table ", T.shape().str());
}
/// dT[ids[i]] += scale_i * dy_i for i in [0, n) (skipping ids == skip); dy_i = dy + (i / ids_per_grad) * D.
/// Deterministic scatter: threads own contiguous ranges of table rows (see the header comment), so
/// every row adds its contributions in the order of i whatever the split. The split balances the
/// ids each thread takes, estimated from every 16th id: label-encoded tables put popular ids in
/// low rows, and an even split of the rows left one thread with 2.5x the other's work.
inline void scatter_add_rows(float* dT, std::int64_t V, std::int64_t D, const std::int32_t* ids, std::int64_t n,
                             const float* dy, std::int64_t ids_per_grad, const float* scale, std::int32_t skip) {
  // Ids in groups sharing one gradient row: no 64-bit divide per id to find its gradient row.
  auto rows = [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t g = 0, i0 = 0; i0 < n; ++g, i0 += ids_per_grad) {
      const float sc = scale ? scale[g] : 1.0f;
      if (sc == 0.0f) continue;
      const float* gy = dy + g * D;
      const std::int64_t i1 = std::min(n, i0 + ids_per_grad);
      for (std::int64_t i = i0; i < i1; ++i) {
        const std::int32_t id = ids[i];
        if (id < r0 || id >= r1 || id == skip) continue;
        float* t = dT + id * D;
        for (std::int64_t j = 0; j < D; ++j) t[j] += sc * gy[j];
      }
    }
  };
  const std::int64_t nt = num_threads();
  if (nt <= 1 || V < 2 || n * D < kParallelMinWork || in_parallel()) return rows(0, V);
  constexpr std::int64_t kStride = 16;
  // Step-arena scratch: a training step allocates nothing on the heap (test_train_alloc).
  auto* bounds = static_cast<std::int64_t*>(step_arena().allocate(static_cast<std::size_t>(nt + 1) * sizeof(std::int64_t)));
  std::fill(bounds, bounds + nt + 1, V);
  {
    auto* counts = static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(V) * sizeof(std::int32_t)));
    std::fill(counts, counts + V, 0);
    std::int64_t sampled = 0;
    for (std::int64_t i = 0; i < n; i += kStride)
      if (ids[i] != skip && ids[i] >= 0 && ids[i] < V) {
        ++counts[ids[i]];
        ++sampled;
      }
    bounds[0] = 0;
    std::int64_t acc = 0, t = 1;
    for (std::int64_t r = 0; r < V && t < nt; ++r) {
      acc += counts[r];
      while (t < nt && acc * nt >= sampled * t) bounds[t++] = r + 1;
    }
  }
  parallel_for(nt, kParallelMinWork, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) rows(bounds[t], bounds[t + 1]);
  });
}
inline void mark_rows(const Var& table, const std::int32_t* ids, std::int64_t n, std::int32_t skip) {
  if (!table.node()->touched) return;
  for (std::int64_t i = 0; i < n; ++i)
    if (ids[i] != skip) table.mark_row(ids[i]);
}
}  // namespace detail

/// Rows of `table` [V, D] at `ids` (int32, any shape S with up to 3 dims) -> [S..., D].
inline Var gather_rows(const Var& table, const Tensor& ids) {
  const Tensor& T = table.value();
  detail::check_cpu("gather_rows", T, ids);
  detail::check_table("gather_rows", T);
  detail::check_i32("gather_rows", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() >= 1 && ids.ndim() < Shape::kMaxDims, "gather_rows: ids ", ids.shape().str(),
                     " must have 1 to 3 dims");
  const std::int64_t n = ids.numel(), D = T.dim(1);
  detail::check_ids("gather_rows", ids.i32(), n, T);
  Shape ys = ids.shape();
  ys.push(D);
  Var out = detail::make_output("gather_rows", ys, DType::f32, table);
  float* Y = out.value().f32();
  const float* pt = T.f32();
  const std::int32_t* pid = ids.i32();
  parallel_for(n, D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i = s; i < e; ++i)
      std::memcpy(Y + i * D, pt + std::int64_t(pid[i]) * D, static_cast<std::size_t>(D) * sizeof(float));
  });
  if (!out.requires_grad()) return out;
  const std::int32_t* saved = detail::arena_copy(pid, n);
  detail::record(out, [table, out, saved, n, D] {
    detail::scatter_add_rows(table.grad_acc().f32(), table.value().dim(0), D, saved, n, out.grad().f32(), 1, nullptr,
                             -1);
    detail::mark_rows(table, saved, n, -1);
  });
  return out;
}

/// Pools the rows of `table` [V, D] at ids [B, L] per row (sum / mean -> [B, D], concat -> [B, L, D]);
/// ids equal to padding_idx (default 0; -1 for none) contribute nothing and get no gradient.
inline Var embedding_bag(const Var& table, const Tensor& ids, BagMode mode, std::int32_t padding_idx = 0) {
  const Tensor& T = table.value();
  detail::check_cpu("embedding_bag", T, ids);
  detail::check_table("embedding_bag", T);
  detail::check_i32("embedding_bag", ids, "ids");
  RECHUB_CHECK_SHAPE(ids.ndim() == 2, "embedding_bag: ids must be [B, L], got ", ids.shape().str());
  const std::int64_t B = ids.dim(0), L = ids.dim(1), D = T.dim(1);
  const std::int32_t* pid = ids.i32();
  const bool cat = mode == BagMode::concat;
  Var out = detail::make_output("embedding_bag", cat ? Shape{B, L, D} : Shape{B, D}, DType::f32, table);
  const bool grad = out.requires_grad();
  // Per-row scale for the backward: 1 for sum, 1 / n_b (or 0) for mean; unused for concat.
  float* scale =
      grad && !cat ? static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(B) * sizeof(float))) : nullptr;
  // The ids the backward scatters by, copied by the threads as they read them (a [4096, 50]
  // history copied and range-checked on one thread beforehand held the other one idle).
  std::int32_t* saved =
      grad ? static_cast<std::int32_t*>(step_arena().allocate(static_cast<std::size_t>(B * L) * sizeof(std::int32_t)))
           : nullptr;
  std::atomic<bool> bad_id{false};
  float* Y = out.value().f32();
  const float* pt = T.f32();
  const std::int64_t V = T.dim(0);
  parallel_for(B, L * D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t b = s; b < e; ++b) {
      const std::int32_t* row = pid + b * L;
      if (saved) std::memcpy(saved + b * L, row, static_cast<std::size_t>(L) * sizeof(std::int32_t));
      if (cat) {
        for (std::int64_t l = 0; l < L; ++l) {
          float* y = Y + (b * L + l) * D;
          if (row[l] < 0 || row[l] >= V) bad_id.store(true, std::memory_order_relaxed);
          if (row[l] == padding_idx || row[l] < 0 || row[l] >= V)
            std::memset(y, 0, static_cast<std::size_t>(D) * sizeof(float));
          else std::memcpy(y, pt + std::int64_t(row[l]) * D, static_cast<std::size_t>(D) * sizeof(float));
        }
        continue;
      }
      float* y = Y + b * D;
      for (std::int64_t j = 0; j < D; ++j) y[j] = 0.0f;
      std::int64_t cnt = 0;
      for (std::int64_t l = 0; l < L; ++l) {
        if (row[l] < 0 || row[l] >= V) {
          bad_id.store(true, std::memory_order_relaxed);
          continue;
        }
        if (row[l] == padding_idx) continue;
        ++cnt;
        const float* t = pt + std::int64_t(row[l]) * D;
        for (std::int64_t j = 0; j < D; ++j) y[j] += t[j];
      }
      float sc = 1.0f;
      if (mode == BagMode::mean) {
        sc = cnt > 0 ? 1.0f / static_cast<float>(cnt) : 0.0f;
        for (std::int64_t j = 0; j < D; ++j) y[j] *= sc;
      }
      if (scale) scale[b] = sc;
    }
  });
  // An id out of range: find the first one (on one thread) and throw; the output is discarded.
  if (bad_id.load()) detail::check_ids("embedding_bag", pid, B * L, T);
  if (!grad) return out;
  const float* sc = scale;
  detail::record(out, [table, out, saved, sc, B, L, D, cat, padding_idx] {
    // concat: one gradient row per id; sum / mean: one gradient row per bag of L ids.
    detail::scatter_add_rows(table.grad_acc().f32(), table.value().dim(0), D, saved, B * L, out.grad().f32(),
                             cat ? 1 : L, cat ? nullptr : sc, padding_idx);
    detail::mark_rows(table, saved, B * L, padding_idx);
  });
  return out;
}

/// y[b] = base[b] + bias + sum_k tables[k][ids[k][b]] (see the top); base and bias may be undefined.
inline Var add_gathered_rows(const Var& base, const Var& bias, const Var* tables, const Tensor* const* ids, int n) {
  RECHUB_CHECK_SHAPE(n >= 1, "add_gathered_rows: needs at least one table");
  const std::int64_t B = ids[0]->numel(), C = tables[0].value().ndim() == 2 ? tables[0].value().dim(1) : -1;
  bool needs = false;
  for (int k = 0; k < n; ++k) {
    const Tensor &T = tables[k].value(), &I = *ids[k];
    detail::check_cpu("add_gathered_rows", T, I);
    detail::check_table("add_gathered_rows", T);
    detail::check_i32("add_gathered_rows", I, "ids");
    RECHUB_CHECK_SHAPE(T.dim(1) == C && I.numel() == B, "add_gathered_rows: table ", k, " ", T.shape().str(),
                       " with ids ", I.shape().str(), " does not match table 0 ", tables[0].shape().str(), " with ",
                       B, " ids");
    detail::check_ids("add_gathered_rows", I.i32(), B, T);
    needs = needs || tables[k].requires_grad();
  }
  if (base.defined()) {
    detail::check_cpu("add_gathered_rows", base.value());
    RECHUB_CHECK_SHAPE(base.shape() == Shape({B, C}), "add_gathered_rows: base ", base.shape().str(), " is not [",
                       B, ", ", C, "]");
  }
  if (bias.defined())
    RECHUB_CHECK_SHAPE(bias.value().numel() == C, "add_gathered_rows: bias ", bias.shape().str(), " is not [", C, "]");
  Var out = detail::make_output("add_gathered_rows", Shape{B, C}, DType::f32);
  out.node()->requires_grad = grad_enabled() && (needs || (base.defined() && base.requires_grad()) ||
                                                  (bias.defined() && bias.requires_grad()));
  float* Y = out.value().f32();
  const float* pbase = base.defined() ? base.value().f32() : nullptr;
  const float* pbias = bias.defined() ? bias.value().f32() : nullptr;
  parallel_for(B, (n + 2) * C, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      float* y = Y + b * C;
      for (std::int64_t c = 0; c < C; ++c) y[c] = (pbase ? pbase[b * C + c] : 0.0f) + (pbias ? pbias[c] : 0.0f);
      for (int k = 0; k < n; ++k) {
        const float* t = tables[k].value().f32() + std::int64_t(ids[k]->i32()[b]) * C;
        for (std::int64_t c = 0; c < C; ++c) y[c] += t[c];
      }
    }
  });
  if (!out.requires_grad()) return out;
  // The backward keeps the tables and id copies in the arena (a closure holds 160 bytes).
  auto** ts = static_cast<Node**>(step_arena().allocate(std::size_t(n) * sizeof(Node*)));
  auto** saved = static_cast<const std::int32_t**>(step_arena().allocate(std::size_t(n) * sizeof(std::int32_t*)));
  for (int k = 0; k < n; ++k) {
    ts[k] = tables[k].node();
    saved[k] = detail::arena_copy(ids[k]->i32(), B);
  }
  detail::record(out, [out, base, bias, ts, saved, n, B, C] {
    // One pass over dy for base, bias and every table: threads own column ranges, so each
    // gradient element is summed in row order by one thread (deterministic for any thread count)
    // and dy is read once instead of once per table.
    const float* dy = out.grad().f32();
    // base's gradient is dy itself when nothing else has sent one yet (this backward has run).
    float* dbase = base.defined() && base.requires_grad() && !base.share_grad_if_first(out.grad())
                       ? base.grad_acc().f32()
                       : nullptr;
    float* dbias = bias.defined() && bias.requires_grad() ? bias.grad_acc().f32() : nullptr;
    auto** dt = static_cast<float**>(step_arena().allocate(std::size_t(n) * sizeof(float*)));
    for (int k = 0; k < n; ++k) {
      const Var t(ts[k]);
      dt[k] = t.requires_grad() ? t.grad_acc().f32() : nullptr;
      if (dt[k]) detail::mark_rows(t, saved[k], B, -1);
    }
    parallel_for(C, B * (n + 2), [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t w = c1 - c0;
      for (std::int64_t b = 0; b < B; ++b) {
        const float* __restrict g = dy + b * C + c0;
        if (dbase) {
          float* __restrict d = dbase + b * C + c0;
          for (std::int64_t c = 0; c < w; ++c) d[c] += g[c];
        }
        if (dbias)
          for (std::int64_t c = 0; c < w; ++c) dbias[c0 + c] += g[c];
        for (int k = 0; k < n; ++k) {
          if (!dt[k]) continue;
          float* __restrict d = dt[k] + std::int64_t(saved[k][b]) * C + c0;
          for (std::int64_t c = 0; c < w; ++c) d[c] += g[c];
        }
      }
    });
  });
  return out;
}

/// Per-row pick: y[b] = x[b, idx[b]] for x [B, K, D], idx int32 [B] -> [B, D].
inline Var select_rows(const Var& x, const Tensor& idx) {
  const Tensor& X = x.value();
  detail::check_cpu("select_rows", X, idx);
  detail::check_f32("select_rows", X, "x");
  detail::check_i32("select_rows", idx, "idx");
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && idx.ndim() == 1 && idx.dim(0) == X.dim(0), "select_rows: x ", X.shape().str(),
                     " and idx ", idx.shape().str(), " do not match (expects x [B, K, D] and idx [B])");
  const std::int64_t B = X.dim(0), K = X.dim(1), D = X.dim(2);
  const std::int32_t* pi = idx.i32();
  for (std::int64_t b = 0; b < B; ++b)
    if (pi[b] < 0 || pi[b] >= K)
      detail::throw_error<DataError>("select_rows: index ", pi[b], " at row ", b, " is out of range for x ",
                                     X.shape().str());
  Var out = detail::make_output("select_rows", Shape{B, D}, DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  for (std::int64_t b = 0; b < B; ++b)
    std::memcpy(Y + b * D, px + (b * K + pi[b]) * D, static_cast<std::size_t>(D) * sizeof(float));
  if (!out.requires_grad()) return out;
  const std::int32_t* saved = detail::arena_copy(pi, B);
  detail::record(out, [x, out, saved, B, K, D] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    for (std::int64_t b = 0; b < B; ++b) {
      float* d = dx + (b * K + saved[b]) * D;
      for (std::int64_t j = 0; j < D; ++j) d[j] += dy[b * D + j];
    }
  });
  return out;
}

/// Gather along the last dim: y[r, j] = x[r, idx[r, j]] for x [R..., M], idx int32 [R..., k] -> [R..., k].
inline Var gather_last(const Var& x, const Tensor& idx) {
  const Tensor& X = x.value();
  detail::check_cpu("gather_last", X, idx);
  detail::check_f32("gather_last", X, "x");
  detail::check_i32("gather_last", idx, "idx");
  bool ok = X.ndim() >= 1 && idx.ndim() == X.ndim();
  for (int i = 0; ok && i + 1 < X.ndim(); ++i) ok = X.dim(i) == idx.dim(i);
  RECHUB_CHECK_SHAPE(ok, "gather_last: x ", X.shape().str(), " and idx ", idx.shape().str(),
                     " must agree on every dim but the last");
  const std::int64_t R = X.rows(), M = X.cols(), k = idx.cols();
  const std::int32_t* pi = idx.i32();
  for (std::int64_t i = 0; i < R * k; ++i)
    if (pi[i] < 0 || pi[i] >= M)
      detail::throw_error<DataError>("gather_last: index ", pi[i], " at position ", i, " is out of range for x ",
                                     X.shape().str());
  Var out = detail::make_output("gather_last", idx.shape(), DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t j = 0; j < k; ++j) Y[r * k + j] = px[r * M + pi[r * k + j]];
  if (!out.requires_grad()) return out;
  const std::int32_t* saved = detail::arena_copy(pi, R * k);
  detail::record(out, [x, out, saved, R, M, k] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t j = 0; j < k; ++j) dx[r * M + saved[r * k + j]] += dy[r * k + j];
  });
  return out;
}

}  // namespace rechub
