#pragma once
// Top-K retrieval metrics, computed exactly as torch_rechub.basic.metric.topk_metrics.
//
// For each K and each user u with a non-empty ground-truth list G_u (users with an empty list
// add nothing to the sums but still count in the user denominator U), scanning the first K
// predictions p_0..p_{K-1} (j = 0-based rank):
//   hit_u  = #{j < K : p_j in G_u}          (a prediction repeated twice counts twice, as in Python)
//   mrr_u  = 1 / (1 + first such j), 0 if none
//   dcg_u  = sum over hits 1 / log2(j + 2),  idcg_u = sum_{j < min(K, |G_u|)} 1 / log2(j + 2)
//   Hit@K       = sum_u hit_u / sum_u |G_u|     (hits over ground-truth items, not users)
//   Recall@K    = (1/U) sum_u hit_u / |G_u|
//   Precision@K = (1/U) sum_u hit_u / K
//   NDCG@K      = (1/U) sum_u dcg_u / idcg_u
//   MRR@K       = (1/U) sum_u mrr_u
// Sums run in double in user order, so values match the Python reference bit for bit before
// rounding. Torch-RecHub rounds each value with round(x, 4) and returns strings such as
// "NDCG@10: 0.1234"; we return the unrounded doubles and offer round_half_even() and
// format_topk_metrics() to reproduce its printed output.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/tensor.hpp"

namespace rechub {

/// Metric values keyed "Hit@10", "Recall@10", "Precision@10", "NDCG@10", "MRR@10" (unrounded).
using MetricMap = std::map<std::string, double>;

/// Top-K metrics over users; ground_truth[u] and predictions[u] (ranked, best first) align by u.
template <class Id>
MetricMap topk_metrics(const std::vector<std::vector<Id>>& ground_truth, const std::vector<std::vector<Id>>& predictions,
                       const std::vector<int>& ks) {
  const std::size_t users = ground_truth.size();
  RECHUB_CHECK_AS(DataError, predictions.size() == users, "topk_metrics: ", users, " ground-truth lists but ",
                  predictions.size(), " prediction lists");
  RECHUB_CHECK_AS(DataError, users > 0, "topk_metrics: no users");
  for (int k : ks) RECHUB_CHECK_AS(ConfigError, k >= 1, "topk_metrics: K must be >= 1, got ", k);

  // Membership tests on a sorted copy; |G_u| keeps duplicates, as Python's len() does.
  std::vector<std::vector<Id>> sorted_truth(users);
  std::int64_t total_truth = 0;
  for (std::size_t u = 0; u < users; ++u) {
    sorted_truth[u] = ground_truth[u];
    std::sort(sorted_truth[u].begin(), sorted_truth[u].end());
    total_truth += static_cast<std::int64_t>(ground_truth[u].size());
  }
  RECHUB_CHECK_AS(DataError, total_truth > 0, "topk_metrics: every ground-truth list is empty");

  MetricMap out;
  for (int k : ks) {
    double ndcgs = 0, mrrs = 0, hits = 0, precisions = 0, recalls = 0;
    for (std::size_t u = 0; u < users; ++u) {
      const auto& truth = sorted_truth[u];
      if (truth.empty()) continue;
      const auto& pred = predictions[u];
      RECHUB_CHECK_AS(DataError, pred.size() >= static_cast<std::size_t>(k), "topk_metrics: user ", u, " has ",
                      pred.size(), " predictions, K = ", k, " needs at least ", k);
      double hit = 0, mrr = 0, dcg = 0, idcg = 0;
      bool first = true;
      for (int j = 0; j < k; ++j) {
        const double discount = 1.0 / std::log2(static_cast<double>(j + 2));
        if (std::binary_search(truth.begin(), truth.end(), pred[j])) {
          hit += 1.0;
          if (first) {
            first = false;
            mrr = 1.0 / (1 + j);
          }
          dcg += discount;
        }
        if (static_cast<std::size_t>(j) < truth.size()) idcg += discount;
      }
      hits += hit;
      mrrs += mrr;
      recalls += hit / static_cast<double>(truth.size());
      precisions += hit / k;
      if (idcg != 0) ndcgs += dcg / idcg;
    }
    const std::string at = "@" + std::to_string(k);
    const double n = static_cast<double>(users);
    out["Hit" + at] = hits / static_cast<double>(total_truth);
    out["MRR" + at] = mrrs / n;
    out["Recall" + at] = recalls / n;
    out["Precision" + at] = precisions / n;
    out["NDCG" + at] = ndcgs / n;
  }
  return out;
}

/// Same, with predictions as the [U, >= K] int32 id matrix an index search returns.
template <class Id>
MetricMap topk_metrics(const std::vector<std::vector<Id>>& ground_truth, const Tensor& prediction_ids,
                       const std::vector<int>& ks) {
  RECHUB_CHECK_SHAPE(prediction_ids.ndim() == 2 && prediction_ids.dtype() == DType::i32,
                     "topk_metrics: predictions must be an int32 [U, K] tensor, got ", prediction_ids.shape().str(), " ",
                     dtype_name(prediction_ids.dtype()));
  const std::int64_t users = prediction_ids.dim(0), cols = prediction_ids.dim(1);
  std::vector<std::vector<Id>> pred(static_cast<std::size_t>(users));
  const std::int32_t* p = prediction_ids.i32();
  for (std::int64_t u = 0; u < users; ++u) pred[u].assign(p + u * cols, p + (u + 1) * cols);
  return topk_metrics(ground_truth, pred, ks);
}

/// Python's round(x, digits): the exact binary value rounded to `digits` decimals, ties to even.
inline double round_half_even(double x, int digits = 4) {
  // glibc's printf rounds the exact binary value correctly (current mode: to nearest, ties even),
  // which is what CPython's round() does through its own correctly rounded dtoa.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return std::strtod(buf, nullptr);
}

/// Torch-RecHub's printed form: one line per metric, "NDCG@10: 0.1234, NDCG@50: ..." (rounded to 4).
inline std::string format_topk_metrics(const MetricMap& m, const std::vector<int>& ks) {
  std::string s;
  for (const char* name : {"NDCG", "MRR", "Recall", "Hit", "Precision"}) {
    for (std::size_t i = 0; i < ks.size(); ++i) {
      const std::string key = std::string(name) + "@" + std::to_string(ks[i]);
      auto it = m.find(key);
      RECHUB_CHECK_AS(ConfigError, it != m.end(), "format_topk_metrics: no value for ", key);
      char buf[64];
      // repr of a Python float rounded to 4 places: shortest digits, at least one decimal.
      std::snprintf(buf, sizeof buf, "%.4f", round_half_even(it->second, 4));
      std::string v = buf;
      while (v.size() > 1 && v.back() == '0' && v[v.size() - 2] != '.') v.pop_back();
      s += (i ? ", " : "") + key + ": " + v;
    }
    s += "\n";
  }
  return s;
}

}  // namespace rechub
