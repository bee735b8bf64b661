#pragma once
// Extra model-input columns derived from the item profile:
//  * neg_<attr>: the profile value of every sampled negative (Torch-RecHub's FaceBookDSSM example
//    builds "neg_cate" the same way with array_replace_with_dict), so item towers with feature
//    columns can embed negatives;
//  * item sampling weights: count^0.75 / sum (Torch-RecHub's get_item_sample_weight, the
//    "sample_weight" column of YoutubeSBC) and their logs, by item id.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "rechub/data/dataset.hpp"
#include "rechub/data/interactions.hpp"

namespace rechub {

/// For each item profile column `attr`, adds "neg_<attr>" with the same shape as `neg_col`.
inline void add_negative_attributes(Dataset& d, const Interactions& data, const std::string& neg_col = "neg_items") {
  if (!d.has(neg_col)) return;
  const Tensor& neg = d[neg_col];
  for (const auto& col : data.item_features) {
    Tensor out = Tensor::empty(neg.shape(), DType::i32);
    const std::int32_t* ids = neg.i32();
    std::int32_t* o = out.i32();
    const std::int64_t n = neg.numel(), vocab = static_cast<std::int64_t>(col.codes.size());
    for (std::int64_t i = 0; i < n; ++i) {
      RECHUB_CHECK_AS(DataError, ids[i] >= 0 && ids[i] < vocab, "add_negative_attributes: ", neg_col, " holds item ",
                      ids[i], ", outside the item profile (", vocab, " rows)");
      o[i] = col.codes[static_cast<std::size_t>(ids[i])];
    }
    d.set("neg_" + col.name, std::move(out));
  }
}

/// q(item) = count^0.75 / sum over items, indexed by item id (0 for the padding id and unseen items).
inline std::vector<float> item_sample_weight(const std::vector<std::int64_t>& counts) {
  std::vector<double> w(counts.size(), 0.0);
  double total = 0;
  for (std::size_t i = 1; i < counts.size(); ++i) total += (w[i] = std::pow(static_cast<double>(counts[i]), 0.75));
  std::vector<float> q(counts.size(), 0.0f);
  for (std::size_t i = 1; i < counts.size(); ++i) q[i] = total > 0 ? static_cast<float>(w[i] / total) : 0.0f;
  return q;
}

/// log q by item id; items never seen get log of the smallest positive q (a finite correction).
inline std::vector<float> log_of(const std::vector<float>& q) {
  float floor_q = 1.0f;
  for (std::size_t i = 1; i < q.size(); ++i)
    if (q[i] > 0 && q[i] < floor_q) floor_q = q[i];
  std::vector<float> lq(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) lq[i] = std::log(q[i] > 0 ? q[i] : floor_q);
  return lq;
}

}  // namespace rechub
