#pragma once
// The popularity baseline every recall model must beat: the K most frequent training items
// (all interactions minus each user's held-out test item), the same list for every test user,
// scored with the same topk_metrics as the models.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "rechub/eval/metrics.hpp"

namespace rechub {

/// item_counts[id] over all interactions; the test targets are subtracted before ranking.
inline MetricMap popularity_metrics(std::vector<std::int64_t> item_counts, const std::vector<std::int32_t>& targets,
                                    const std::vector<int>& ks = {10, 50, 100}) {
  for (auto t : targets)
    if (t >= 0 && static_cast<std::size_t>(t) < item_counts.size()) --item_counts[static_cast<std::size_t>(t)];
  if (!item_counts.empty()) item_counts[0] = -1;  // the padding id is never recommended
  std::vector<std::int64_t> order(item_counts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return item_counts[static_cast<std::size_t>(a)] >
                                                                item_counts[static_cast<std::size_t>(b)]; });
  const int kmax = ks.empty() ? 0 : *std::max_element(ks.begin(), ks.end());
  std::vector<std::int64_t> top(order.begin(), order.begin() + std::min<std::size_t>(order.size() - 1, kmax));
  std::vector<std::vector<std::int64_t>> truth(targets.size()), pred(targets.size(), top);
  for (std::size_t u = 0; u < targets.size(); ++u) truth[u] = {targets[u]};
  return topk_metrics(truth, pred, ks);
}

}  // namespace rechub
