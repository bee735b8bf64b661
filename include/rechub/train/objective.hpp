#pragma once
// Objective: which scores a batch produces and which loss trains them (MatchTrainer's knobs).
//
//   mode 0 point-wise  s = <u, v> / T                 -> BCE with logits against "label"
//   mode 1 pair-wise   s+ = <u, v+>, s- = <u, v->      -> BPR (or hinge with `margin`)
//   mode 2 list-wise   s = <u, [v+, v-_1..v-_k]> / T   -> softmax cross-entropy, positive first
//   in_batch_neg       negatives are the other rows' positives:
//                        ratio 0: full B x B in-batch softmax (optional log-Q correction and
//                                 accidental-hit masking);
//                        ratio k: per row k columns of U V^T, drawn uniformly or the k hardest
//                                 (highest-scoring) ones, then list-wise softmax over 1 + k.
//   loss "full"        full softmax over the whole catalogue: every step embeds every item
//                      (`all_items`, ids 1..n in order) and trains CE over s = <u, V_all> / T,
//                      optionally minus log q. Exact, and cheap while the catalogue is small
//                      next to the batch (MovieLens: 1.7k-3.7k items).
//   loss "sbc"         Torch-RecHub YoutubeSBC: row i against items (i + k) mod B, k = 0..n_neg,
//                      cosine scores minus log(sample_weight), / T.
//   loss "position_*"  sequence models trained on every position (SASRec; rows from
//                      data/position_samples.hpp): the model's position_states [B, L, D] at the
//                      positions where "pos_<item>" [B, L] is not 0, scored against item_tower(all_items):
//                        position_bce      Kang & McAuley's BCE: softplus(-s+) + mean softplus(s-)
//                        position_bpr      Torch-RecHub's BPR: mean -log sigmoid(s+ - s-)
//                        position_sampled  softmax over [s+, s-_1..k] / T (negatives equal to the
//                                          positive dropped when mask_accidental_hits)
//                        position_full     softmax over ALL items / T at every position
//                                          (Klenitskiy & Vasilev, RecSys 2023), chunked, exact
//                      negatives: "neg_<item>" [B, L, k], or, without that column, n_neg uniform
//                      draws per position from the trainer's rng (fresh every step).
// Torch-RecHub's BCE is on sigmoid(s); bce_with_logits(s) is the same function, computed stably.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/loss/bce.hpp"
#include "rechub/loss/inbatch.hpp"
#include "rechub/loss/pairwise.hpp"
#include "rechub/loss/position.hpp"
#include "rechub/loss/softmax_ce.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/score.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/topk.hpp"

namespace rechub {

struct Objective {
  int mode = 0;                     // 0 point-wise, 1 pair-wise, 2 list-wise (Torch-RecHub's)
  std::string loss;                 // "" = by mode (bce / bpr / softmax); or "hinge", "inbatch", "sbc"
  float temperature = 0.0f;         // 0 = the model's own temperature
  float margin = 2.0f;              // hinge
  bool in_batch_neg = false;        // negatives from the other rows of the batch
  int in_batch_neg_ratio = 0;       // 0 = every other row; k = k per row
  bool hard_negatives = false;      // with a ratio: the k highest-scoring instead of uniform
  bool log_q_correction = false;    // in-batch: subtract log q(item), q = in-batch sampling probability
  bool mask_accidental_hits = true; // in-batch: a row's own positive seen in another row is no negative
  int n_neg = 3;                    // "sbc": negatives per row
  std::string item_col = "movie_id";
  std::vector<float> log_q;         // by item id (filled by the trainer when log_q_correction / sbc)
  std::string log_q_column;         // when the batch has this float column (q per row), log q comes from it
  const Dataset* all_items = nullptr;  // "full": every item, row r = item id r + 1 (MatchData::items)

  std::string effective_loss() const {
    if (!loss.empty()) return loss;
    if (in_batch_neg) return "inbatch";
    return mode == 0 ? "bce" : mode == 1 ? "bpr" : "softmax";
  }
};

inline void to_json(nlohmann::json& j, const Objective& o) {
  j = {{"mode", o.mode}, {"loss", o.effective_loss()}, {"temperature", o.temperature}, {"margin", o.margin},
       {"in_batch_neg", o.in_batch_neg}, {"in_batch_neg_ratio", o.in_batch_neg_ratio},
       {"hard_negatives", o.hard_negatives}, {"log_q_correction", o.log_q_correction},
       {"mask_accidental_hits", o.mask_accidental_hits}, {"n_neg", o.n_neg}};
}
inline void from_json(const nlohmann::json& j, Objective& o) {
  o.mode = j.value("mode", o.mode);
  o.loss = j.value("loss", o.loss);
  o.temperature = j.value("temperature", o.temperature);
  o.margin = j.value("margin", o.margin);
  o.in_batch_neg = j.value("in_batch_neg", o.in_batch_neg);
  o.in_batch_neg_ratio = j.value("in_batch_neg_ratio", o.in_batch_neg_ratio);
  o.hard_negatives = j.value("hard_negatives", o.hard_negatives);
  o.log_q_correction = j.value("log_q_correction", o.log_q_correction);
  o.mask_accidental_hits = j.value("mask_accidental_hits", o.mask_accidental_hits);
  o.n_neg = j.value("n_neg", o.n_neg);
  RECHUB_CHECK_AS(ConfigError, o.mode >= 0 && o.mode <= 2, "objective: mode must be 0, 1 or 2, got ", o.mode);
  const std::string l = o.effective_loss();
  RECHUB_CHECK_AS(ConfigError,
                  l == "bce" || l == "bpr" || l == "hinge" || l == "softmax" || l == "inbatch" || l == "sbc" || l == "full" ||
                      l == "position_bce" || l == "position_bpr" || l == "position_sampled" || l == "position_full",
                  "objective: unknown loss '", l,
                  "' (bce, bpr, hinge, softmax, inbatch, sbc, full, position_bce, position_bpr, position_sampled, "
                  "position_full)");
}

namespace detail {
// Per-row log q of the batch's positive items, in the step arena (nullptr when unused).
inline const float* batch_log_q(const Batch& batch, const Objective& o) {
  if (!o.log_q_column.empty() && batch.has(o.log_q_column)) {
    const Tensor& q = batch[o.log_q_column];
    float* lq = static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(q.numel()) * sizeof(float)));
    for (std::int64_t b = 0; b < q.numel(); ++b) {
      RECHUB_CHECK_AS(DataError, q.f32()[b] > 0, "objective: ", o.log_q_column, " of row ", b, " is ", q.f32()[b],
                      ", needs a probability > 0");
      lq[b] = std::log(q.f32()[b]);
    }
    return lq;
  }
  if (o.log_q.empty()) return nullptr;
  const Tensor& ids = batch[o.item_col];
  const std::int64_t B = ids.dim(0);
  float* lq = static_cast<float*>(step_arena().allocate(static_cast<std::size_t>(B) * sizeof(float)));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int32_t id = ids.i32()[b];
    RECHUB_CHECK_AS(DataError, id >= 0 && id < static_cast<std::int32_t>(o.log_q.size()), "objective: item id ", id,
                    " has no sampling probability (", o.log_q.size(), " known)");
    lq[b] = o.log_q[static_cast<std::size_t>(id)];
  }
  return lq;
}

// Column indices [B, 1 + k] of U V^T: the diagonal first, then k negatives per row.
inline Tensor inbatch_columns(const Tensor& scores, const Tensor& item_ids, int k, bool hard, bool mask_hits, Rng& rng) {
  const std::int64_t B = scores.dim(0);
  RECHUB_CHECK_AS(ConfigError, k < B, "objective: in_batch_neg_ratio ", k, " needs a batch of more than ", k,
                  " rows, got ", B);
  Tensor idx = step_arena().tensor({B, k + 1}, DType::i32);
  const std::int32_t* items = item_ids.i32();
  const float* s = scores.f32();
  for (std::int64_t i = 0; i < B; ++i) {
    std::int32_t* row = idx.i32() + i * (k + 1);
    row[0] = static_cast<std::int32_t>(i);
    auto usable = [&](std::int64_t j) { return j != i && !(mask_hits && items[j] == items[i]); };
    if (!hard) {
      for (int c = 1; c <= k; ++c) {
        std::int64_t j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(B)));
        for (int tries = 0; !usable(j) && tries < 8; ++tries) j = static_cast<std::int64_t>(rng.below(B));
        row[c] = static_cast<std::int32_t>(usable(j) ? j : (i + c) % B);
      }
    } else {
      // k highest-scoring usable columns by insertion into a small sorted list.
      int filled = 0;
      for (std::int64_t j = 0; j < B; ++j) {
        if (!usable(j)) continue;
        const float v = s[i * B + j];
        if (filled == k && v <= s[i * B + row[k]]) continue;
        int p = filled < k ? ++filled : k;
        while (p > 1 && s[i * B + row[p - 1]] < v) {
          row[p] = row[p - 1];
          --p;
        }
        row[p] = static_cast<std::int32_t>(j);
      }
      for (int c = filled + 1; c <= k; ++c) row[c] = static_cast<std::int32_t>((i + c) % B);
    }
  }
  return idx;
}
}  // namespace detail

/// A "position_*" loss (see the header comment): per-position states against all item vectors.
inline Var position_loss(MatchModel& model, const Batch& batch, const Objective& o, Rng& rng) {
  const std::string& kind = o.loss;  // position losses are always named explicitly
  RECHUB_CHECK_AS(ConfigError, o.all_items != nullptr, "match_loss: loss '", kind, "' needs Objective::all_items");
  const float T = o.temperature > 0 ? o.temperature : model.temperature();
  const Tensor& pos = batch["pos_" + o.item_col];
  Var H = model.position_states(batch);  // [B, L, D]
  RECHUB_CHECK_SHAPE(pos.ndim() == 2 && H.ndim() == 3 && H.dim(0) == pos.dim(0) && H.dim(1) == pos.dim(1),
                     "match_loss: position states ", H.shape().str(), " do not match pos_", o.item_col, " ",
                     pos.shape().str());
  const std::int64_t B = H.dim(0), L = H.dim(1), D = H.dim(2);
  const Tensor idx = valid_positions(pos);
  const std::int64_t N = idx.numel();
  RECHUB_CHECK_AS(DataError, N > 0, "match_loss: no valid position in pos_", o.item_col, " (all ", B * L,
                  " targets are padding)");
  Var h = gather_rows(reshape(H, Shape{B * L, D}), idx);  // [N, D]
  Var items = model.item_tower(*o.all_items);             // [M, D], row r = item id r + 1
  const std::int64_t M = items.dim(0);
  auto row_of = [&](std::int32_t id, const char* what) {
    RECHUB_CHECK_AS(DataError, id >= 1 && id <= M, "match_loss: ", what, " item id ", id, " outside 1..", M);
    return id - 1;
  };
  Tensor target = step_arena().tensor({N}, DType::i32);
  for (std::int64_t i = 0; i < N; ++i) target.i32()[i] = row_of(pos.i32()[idx.i32()[i]], "target");
  if (kind == "position_full") return position_full_softmax(h, items, target, T);
  const std::string neg_col = "neg_" + o.item_col;
  Tensor neg;
  if (batch.has(neg_col)) {
    const Tensor& nb = batch[neg_col];  // [B, L, k] (or [B, L]: k = 1)
    RECHUB_CHECK_SHAPE((nb.ndim() == 3 || nb.ndim() == 2) && nb.dim(0) == B && nb.dim(1) == L, "match_loss: ", neg_col,
                       " ", nb.shape().str(), " does not match pos_", o.item_col, " ", pos.shape().str());
    const std::int64_t k = nb.ndim() == 3 ? nb.dim(2) : 1;
    neg = step_arena().tensor({N, k}, DType::i32);
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t j = 0; j < k; ++j)
        neg.i32()[i * k + j] = row_of(nb.i32()[std::int64_t(idx.i32()[i]) * k + j], "negative");
  } else {
    RECHUB_CHECK_AS(ConfigError, o.n_neg >= 1, "match_loss: loss '", kind, "' without a ", neg_col,
                    " column draws n_neg negatives per position; n_neg is ", o.n_neg);
    neg = step_arena().tensor({N, std::int64_t(o.n_neg)}, DType::i32);
    for (std::int64_t i = 0; i < neg.numel(); ++i)
      neg.i32()[i] = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(M)));
  }
  if (kind == "position_bce") return position_bce(h, items, target, neg);
  if (kind == "position_bpr") return position_bpr(h, items, target, neg);
  RECHUB_CHECK_AS(ConfigError, kind == "position_sampled", "match_loss: unknown loss '", kind, "'");
  return position_sampled_softmax(h, items, target, neg, T, o.mask_accidental_hits);
}

/// The training loss of one batch under `o` (a scalar Var on the tape).
inline Var match_loss(MatchModel& model, const Batch& batch, const Objective& o, Rng& rng) {
  // Before copying the loss name: "position_sampled" is past std::string's inline capacity.
  if (o.loss.rfind("position_", 0) == 0) return position_loss(model, batch, o, rng);
  const float T = o.temperature > 0 ? o.temperature : model.temperature();
  const std::string kind = o.effective_loss();
  const Tensor& ids = batch[o.item_col];
  if (kind == "full") {
    RECHUB_CHECK_AS(ConfigError, o.all_items != nullptr, "match_loss: loss 'full' needs Objective::all_items");
    Var all = model.item_tower(*o.all_items);  // [N, D], row r = item id r + 1
    Tensor target = step_arena().tensor({ids.dim(0)}, DType::i32);
    for (std::int64_t b = 0; b < ids.dim(0); ++b) target.i32()[b] = ids.i32()[b] - 1;
    // Not item_tower(batch): a second pass would move the item tower's BatchNorm statistics.
    Var u = model.interest_num() > 1 ? model.train_user_tower(batch, gather_rows(all, target)) : model.user_tower(batch);
    Var logits = matmul(u, all, false, true);  // [B, N]
    if (o.log_q_correction && !o.log_q.empty()) {
      Tensor lq = step_arena().tensor({1, all.dim(0)});
      for (std::int64_t j = 0; j < all.dim(0); ++j) lq.f32()[j] = T * o.log_q[static_cast<std::size_t>(j + 1)];
      logits = sub(logits, constant(lq));
    }
    return softmax_cross_entropy(logits, target, T);
  }
  // Positive item vectors first: a multi-interest user tower selects its interest with them.
  Var v = model.item_tower(batch);
  Var u = model.train_user_tower(batch, v);
  if (kind == "bce") return bce_with_logits(row_dot(u, v, 1.0f / T), batch["label"]);
  if (kind == "bpr" || kind == "hinge") {
    Var neg = model.neg_item_tower(batch);  // [B, K, D]
    Var pos_s = row_dot(u, v), neg_s = group_dot(u, neg);
    return kind == "bpr" ? bpr(pos_s, neg_s) : hinge(pos_s, neg_s, o.margin);
  }
  if (kind == "softmax") {
    Var neg = model.neg_item_tower(batch);
    Var all = concat({unsqueeze(v, 1), neg}, 1);  // [B, 1 + K, D]
    return listwise_softmax_ce(group_dot(u, all), T);
  }
  if (kind == "sbc") return inbatch_cyclic_softmax(u, v, o.n_neg, T, detail::batch_log_q(batch, o), true);
  RECHUB_CHECK_AS(ConfigError, kind == "inbatch", "match_loss: unknown loss '", kind, "'");
  if (o.in_batch_neg_ratio <= 0)
    return inbatch_softmax(u, v, T, o.log_q_correction ? detail::batch_log_q(batch, o) : nullptr,
                           o.mask_accidental_hits ? ids.i32() : nullptr);
  Var scores = matmul(u, v, false, true);  // [B, B]
  Tensor cols = detail::inbatch_columns(scores.value(), ids, o.in_batch_neg_ratio, o.hard_negatives,
                                        o.mask_accidental_hits, rng);
  return listwise_softmax_ce(gather_last(scores, cols), T);
}

}  // namespace rechub
