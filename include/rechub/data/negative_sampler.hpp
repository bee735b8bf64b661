#pragma once
// Negative sampling from the global item distribution, as Torch-RecHub's
// torch_rechub.utils.match.negative_sample does it.
//
// Every item that occurs in the interactions (count c > 0) gets a weight; items that never occur
// are never drawn (Torch-RecHub's candidate list is the keys of a Counter over the data):
//   method 0  uniform          w = 1
//   method 1  word2vec         w = c^0.75
//   method 2  log popularity   w = log(c + 1) + 1e-6
//   method 3  "Tencent RALM"   w = log(c + 2) - log(c + 1)   (Torch-RecHub divides by log(n+1),
//             a constant that cancels on normalisation). Note that Torch-RecHub plugs the item's
//             COUNT into the RALM formula where the paper uses the popularity RANK, so popular
//             items are drawn LESS often; we follow the code so the numbers compare.
// p(item) = w / sum(w). Draws are with replacement. (Torch-RecHub's method 3 asks numpy for
// rows*neg_ratio draws without replacement, which raises as soon as that exceeds the number
// of items, i.e. on every real dataset; with replacement is the only usable reading.)
//
// Sampling uses Walker/Vose alias tables: O(n) to build, O(1) per draw, bit-reproducible for a
// given Rng stream.
#include <cmath>
#include <cstdint>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/data/interactions.hpp"

namespace rechub {

/// Occurrences of each encoded item id (index 0 = padding, always 0); size max(num_items, max id) + 1.
inline std::vector<std::int64_t> item_counts(const Interactions& data) {
  std::int32_t n = data.num_items();
  for (std::int32_t it : data.item) n = it > n ? it : n;
  std::vector<std::int64_t> counts(static_cast<std::size_t>(n) + 1, 0);
  for (std::int32_t it : data.item) {
    RECHUB_CHECK_AS(DataError, it >= 1, "item_counts: item id ", it, " (ids start at 1, 0 is padding)");
    ++counts[static_cast<std::size_t>(it)];
  }
  return counts;
}

/// Unnormalised sampling weight of an item seen `count` (> 0) times under `method` (0..3).
inline double negative_weight(int method, std::int64_t count) {
  const double c = static_cast<double>(count);
  switch (method) {
    case 0: return 1.0;
    case 1: return std::pow(c, 0.75);
    case 2: return std::log(c + 1.0) + 1e-6;
    case 3: return std::log(c + 2.0) - std::log(c + 1.0);
    default:
      detail::throw_error<ConfigError>("negative_sample: method ", method,
                                       " (expects 0 uniform, 1 word2vec, 2 log, 3 RALM)");
  }
}

/// Draws item ids from the global item distribution of one sampling method.
class NegativeSampler {
 public:
  NegativeSampler() = default;
  /// `counts[id]` = occurrences of item id (index 0 ignored); `method` as in the header comment.
  NegativeSampler(const std::vector<std::int64_t>& counts, int method) : method_(method) {
    negative_weight(method, 1);  // validates the method
    prob_of_.assign(counts.size(), 0.0);
    std::vector<double> w;
    double total = 0;
    for (std::size_t id = 1; id < counts.size(); ++id) {
      if (counts[id] <= 0) continue;
      items_.push_back(static_cast<std::int32_t>(id));
      w.push_back(negative_weight(method, counts[id]));
      total += w.back();
    }
    RECHUB_CHECK_AS(DataError, !items_.empty(), "NegativeSampler: no item occurs in the data");
    for (std::size_t k = 0; k < items_.size(); ++k) prob_of_[static_cast<std::size_t>(items_[k])] = w[k] / total;
    build_alias(w, total);
  }

  /// One item id, drawn with probability probability(id).
  std::int32_t operator()(Rng& rng) const {
    const std::size_t k = static_cast<std::size_t>(rng.below(items_.size()));
    return rng.uniform() < accept_[k] ? items_[k] : alias_item_[k];
  }
  /// Normalised probability of drawing item `id` (0 for ids that never occur).
  double probability(std::int32_t id) const {
    return id >= 0 && static_cast<std::size_t>(id) < prob_of_.size() ? prob_of_[static_cast<std::size_t>(id)] : 0.0;
  }
  /// Probabilities by item id (index 0 = padding = 0).
  const std::vector<double>& probabilities() const { return prob_of_; }
  /// The items that can be drawn (those with count > 0), ascending.
  const std::vector<std::int32_t>& support() const { return items_; }
  int method() const { return method_; }

 private:
  // Vose's alias method: split every column of height n*p into its own item up to `accept`
  // and the overflow of one "large" item above it.
  void build_alias(const std::vector<double>& w, double total) {
    const std::size_t n = w.size();
    accept_.assign(n, 1.0);
    alias_item_.assign(items_.begin(), items_.end());
    std::vector<double> scaled(n);
    std::vector<std::size_t> small, large;
    for (std::size_t k = 0; k < n; ++k) {
      scaled[k] = w[k] * static_cast<double>(n) / total;
      (scaled[k] < 1.0 ? small : large).push_back(k);
    }
    while (!small.empty() && !large.empty()) {
      const std::size_t s = small.back(), l = large.back();
      small.pop_back();
      accept_[s] = scaled[s];
      alias_item_[s] = items_[l];
      scaled[l] = (scaled[l] + scaled[s]) - 1.0;
      if (scaled[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    // Leftovers are 1 up to rounding: they always accept themselves.
    for (std::size_t k : small) accept_[k] = 1.0;
    for (std::size_t k : large) accept_[k] = 1.0;
  }

  int method_ = 0;
  std::vector<std::int32_t> items_;       // support, ascending ids
  std::vector<double> accept_;            // per column: keep items_[k] when u < accept_[k]
  std::vector<std::int32_t> alias_item_;  // per column: otherwise this item
  std::vector<double> prob_of_;           // by item id
};

/// `n` negatives drawn with replacement (Torch-RecHub's negative_sample(items_cnt, n, method)).
inline std::vector<std::int32_t> negative_sample(const std::vector<std::int64_t>& counts, std::int64_t n, int method,
                                                 Rng& rng) {
  RECHUB_CHECK_AS(ConfigError, n >= 0, "negative_sample: n ", n, " must be >= 0");
  NegativeSampler sampler(counts, method);
  std::vector<std::int32_t> out(static_cast<std::size_t>(n));
  for (auto& v : out) v = sampler(rng);
  return out;
}

}  // namespace rechub
