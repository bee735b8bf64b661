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
// Torch-RecHub's BCE is on sigmoid(s); bce_with_logits(s) is the same function, computed stably.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/loss/bce.hpp"
#include "rechub/loss/inbatch.hpp"
#include "rechub/loss/pairwise.hpp"
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
                  l == "bce" || l == "bpr" || l == "hinge" || l == "softmax" || l == "inbatch" || l == "sbc" || l == "full",
                  "objective: unknown loss '", l, "' (bce, bpr, hinge, softmax, inbatch, sbc, full)");
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

/// The training loss of one batch under `o` (a scalar Var on the tape).
inline Var match_loss(MatchModel& model, const Batch& batch, const Objective& o, Rng& rng) {
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
