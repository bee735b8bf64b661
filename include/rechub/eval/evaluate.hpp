#pragma once
// Retrieval evaluation, Torch-RecHub's protocol: embed every test user and every item, rank
// ALL items for each user (exact search, cosine by default, no filtering of seen items, as the
// examples do), and compute topk_metrics against each user's held-out item(s).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "rechub/data/batch_iterator.hpp"
#include "rechub/eval/metrics.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/retrieval/exact_index.hpp"
#include "rechub/retrieval/merge.hpp"

namespace rechub {

struct EvalOptions {
  std::vector<int> ks{10, 50, 100};
  Metric metric = Metric::cosine;
  std::int64_t batch_size = 4096;
};

/// Row-stacked tower outputs over a whole dataset (batched, eval mode, no tape): [N, D], or
/// [N, K, D] for a multi-interest user tower.
template <class Tower>
Tensor embed_all(const Dataset& data, std::int64_t batch_size, Tower&& tower) {
  BatchIterator it(data, batch_size, false);
  Tensor out;
  std::int64_t row = 0;
  while (const Batch* b = it.next()) {
    Tensor e = tower(*b);
    const std::int64_t per_row = e.numel() / e.dim(0);
    if (!out.defined()) {
      Shape s = e.shape();
      s[0] = data.rows();
      out = Tensor::empty(s);
    }
    std::copy(e.f32(), e.f32() + e.numel(), out.f32() + row * per_row);
    row += e.dim(0);
  }
  return out;
}

inline Tensor embed_users(MatchModel& m, const Dataset& users, std::int64_t batch_size = 4096) {
  return embed_all(users, batch_size, [&](const Batch& b) { return m.user_embedding(b); });
}
inline Tensor embed_items(MatchModel& m, const Dataset& items, std::int64_t batch_size = 4096) {
  return embed_all(items, batch_size, [&](const Batch& b) { return m.item_embedding(b); });
}

/// Metrics of ranking every item of `items` for every row of `test_users` (targets[r] = row r's
/// held-out item id, as in the column `item_col` of `items`).
inline MetricMap evaluate_retrieval(MatchModel& m, const Dataset& test_users, const std::vector<std::int32_t>& targets,
                                    const Dataset& items, const std::string& item_col, const EvalOptions& opt = {}) {
  RECHUB_CHECK_AS(ConfigError, static_cast<std::int64_t>(targets.size()) == test_users.rows(),
                  "evaluate_retrieval: ", targets.size(), " targets for ", test_users.rows(), " test users");
  RECHUB_CHECK_AS(ConfigError, !opt.ks.empty(), "evaluate_retrieval: no K given");
  const int kmax = *std::max_element(opt.ks.begin(), opt.ks.end());
  Tensor item_vecs = embed_items(m, items, opt.batch_size);
  Tensor user_vecs = embed_users(m, test_users, opt.batch_size);
  const Tensor& ids = items[item_col];
  std::vector<std::int64_t> labels(ids.i32(), ids.i32() + ids.numel());
  ExactIndex index(item_vecs, opt.metric, labels);
  const std::int64_t k = std::min<std::int64_t>(kmax, index.size());
  // Multi-interest users [U, K, D]: query with every interest, merge by max score, no duplicates.
  SearchResult r = user_vecs.ndim() == 3 ? multi_interest_search(index, user_vecs, k) : index.search(user_vecs, k);
  std::vector<std::vector<std::int64_t>> truth(targets.size()), pred(targets.size());
  for (std::size_t u = 0; u < targets.size(); ++u) {
    truth[u] = {targets[u]};
    const std::int32_t* row = r.ids.i32() + static_cast<std::int64_t>(u) * k;
    pred[u].assign(row, row + k);
  }
  return topk_metrics(truth, pred, opt.ks);
}

}  // namespace rechub
