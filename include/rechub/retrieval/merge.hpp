#pragma once
// Multi-interest retrieval (MIND, ComiRec, SINE): a user is K interest vectors q_1..q_K.
//   candidates = union over i of top-k_i(q_i)      (k_i = per_interest_k, default top_n)
//   score(item) = max over interests i that retrieved it of score(q_i, item)
//   result      = top_n candidates by score, best first, ties by the lower label, no duplicates
// This is Torch-RecHub's evaluation (query each interest, concatenate, sort by score, drop
// duplicate items keeping the best, take top_n), including its skipping of all-zero interest
// vectors (MIND zeroes a user's inactive interests; such a vector would retrieve arbitrary items).
// With an exact index and per_interest_k >= top_n the merged list is the exact top_n by max
// score: an item ranked below top_n in the interest that gives its max has top_n better items.
//
// Works with any index offering
//   template <class Label> void search_into(const float* q, int64 Q, int64 k, float* scores,
//       Label* labels, const ExcludeLists* exclude, int64 queries_per_list) const;
//   int64 dim() const;
// i.e. ExactIndex and HnswIndex.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/retrieval/exact_index.hpp"

namespace rechub {

/// Multi-interest merge settings.
struct MergeOptions {
  /// Candidates fetched per interest; 0 means top_n.
  std::int64_t per_interest_k = 0;
  /// Ignore interest vectors that are exactly zero (as Torch-RecHub's evaluation does).
  bool skip_zero_interests = true;
};

namespace detail {

/// Merges n (score, label) candidates into the top_n distinct labels by max score.
/// `work` is scratch of at least n entries. Labels < 0 (empty slots) and NaN scores are skipped.
template <class Label>
void merge_candidates(const float* scores, const Label* labels, std::int64_t n, std::int64_t top_n, float* out_scores,
                      Label* out_labels, std::pair<float, std::int64_t>* work) {
  std::int64_t m = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || scores[i] != scores[i]) continue;
    work[m++] = {scores[i], static_cast<std::int64_t>(labels[i])};
  }
  // Group by label with the best score first, keep that one.
  std::sort(work, work + m, [](const auto& a, const auto& b) {
    return a.second < b.second || (a.second == b.second && a.first > b.first);
  });
  std::int64_t u = 0;
  for (std::int64_t i = 0; i < m; ++i)
    if (u == 0 || work[u - 1].second != work[i].second) work[u++] = work[i];
  const std::int64_t keep = std::min(u, top_n);
  auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(work, work + keep, work + u, better);
  for (std::int64_t j = 0; j < keep; ++j) {
    out_scores[j] = work[j].first;
    out_labels[j] = static_cast<Label>(work[j].second);
  }
  for (std::int64_t j = keep; j < top_n; ++j) {
    out_scores[j] = -std::numeric_limits<float>::infinity();
    out_labels[j] = static_cast<Label>(kNoLabel);
  }
}

}  // namespace detail

/// Batched multi-interest search: queries [U, K, D] (or [U * K, D] with n_interests = K) -> top_n
/// merged results per user [U, top_n]; `exclude` holds one list per user (or is null).
template <class Index, class Label>
void multi_interest_search_into(const Index& index, const float* queries, std::int64_t users, std::int64_t n_interests,
                                std::int64_t top_n, float* out_scores, Label* out_labels, const MergeOptions& opt = {},
                                const ExcludeLists* exclude = nullptr) {
  RECHUB_CHECK_AS(ConfigError, top_n >= 1, "multi_interest_search: top_n must be >= 1, got ", top_n);
  RECHUB_CHECK_AS(ConfigError, n_interests >= 1, "multi_interest_search: need at least one interest, got ", n_interests);
  if (exclude)
    RECHUB_CHECK_SHAPE(exclude->num_lists() == users, "multi_interest_search: ", exclude->num_lists(),
                       " exclusion lists for ", users, " users");
  const std::int64_t k = opt.per_interest_k > 0 ? opt.per_interest_k : top_n;
  const std::int64_t d = index.dim(), nq = users * n_interests;
  std::vector<float> scores(static_cast<std::size_t>(nq * k));
  std::vector<Label> labels(static_cast<std::size_t>(nq * k));
  index.search_into(queries, nq, k, scores.data(), labels.data(), exclude, n_interests);
  if (opt.skip_zero_interests) {
    for (std::int64_t q = 0; q < nq; ++q)
      if (detail::is_zero_row(queries + q * d, d))
        std::fill(labels.begin() + q * k, labels.begin() + (q + 1) * k, static_cast<Label>(kNoLabel));
  }
  parallel_for(users, n_interests * k * 16, [&](std::int64_t ub, std::int64_t ue) {
    std::vector<std::pair<float, std::int64_t>> work(static_cast<std::size_t>(n_interests * k));
    for (std::int64_t u = ub; u < ue; ++u) {
      const std::int64_t off = u * n_interests * k;
      detail::merge_candidates(scores.data() + off, labels.data() + off, n_interests * k, top_n,
                               out_scores + u * top_n, out_labels + u * top_n, work.data());
    }
  });
}

/// Tensor form: queries f32 [U, K, D] -> SearchResult {scores [U, top_n], ids i32 [U, top_n]}.
template <class Index>
SearchResult multi_interest_search(const Index& index, const Tensor& queries, std::int64_t top_n,
                                   const MergeOptions& opt = {}, const ExcludeLists* exclude = nullptr) {
  RECHUB_CHECK_SHAPE(queries.ndim() == 3 && queries.dtype() == DType::f32 && queries.device() == Device::cpu,
                     "multi_interest_search: queries must be a float32 [U, K, D] cpu tensor, got ",
                     queries.shape().str(), " ", dtype_name(queries.dtype()));
  RECHUB_CHECK_SHAPE(queries.dim(2) == index.dim(), "multi_interest_search: queries ", queries.shape().str(),
                     " do not match index dim ", index.dim());
  RECHUB_CHECK_AS(ConfigError, top_n >= 1, "multi_interest_search: top_n must be >= 1, got ", top_n);
  const std::int64_t users = queries.dim(0);
  SearchResult r{Tensor::empty({users, top_n}), Tensor::empty({users, top_n}, DType::i32)};
  multi_interest_search_into(index, queries.f32(), users, queries.dim(1), top_n, r.scores.f32(), r.ids.i32(), opt,
                             exclude);
  return r;
}

/// One user's K interest vectors [K, D] -> top_n merged (scores, labels), excluding the given labels.
template <class Index, class Label>
void multi_interest_search_one(const Index& index, const float* queries, std::int64_t n_interests, std::int64_t top_n,
                               float* out_scores, Label* out_labels, const MergeOptions& opt = {},
                               const std::int64_t* exclude = nullptr, std::int64_t n_exclude = 0) {
  ExcludeLists ex;
  if (exclude) ex.add(exclude, n_exclude);
  multi_interest_search_into(index, queries, 1, n_interests, top_n, out_scores, out_labels, opt,
                             exclude ? &ex : nullptr);
}

}  // namespace rechub
