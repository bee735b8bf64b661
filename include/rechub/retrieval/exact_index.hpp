#pragma once
// ExactIndex: brute-force top-k retrieval over an item matrix.
//   inner product: score(q, i) = <q, x_i>
//   cosine:        score(q, i) = <q / max(|q|, eps), x_i / max(|x_i|, eps)>, eps = 1e-12
//                  (items are normalised once at construction, queries per search)
// Shapes: items [N, D], queries [Q, D] -> scores f32 [Q, k], ids i32 [Q, k].
//
// Scores are produced tile by tile (Qt queries x B items through detail::gemm, 1 MB at most), and
// every query keeps a size-k min-heap of (score, row) whose top is the worst kept candidate, so
// memory stays O(Q * k) whatever N is. Results are ordered by score descending, ties by the lower
// row (= the lower label for the default identity labels or any ascending labelling). Slots past
// the number of eligible items are padded with label -1 and score -inf. Batched search splits the
// queries over OpenMP threads (static chunks, so results never depend on the thread count).
// search_one (serving) runs one query on the calling thread, GEMV per item block, and allocates
// nothing once its Scratch holds k entries. It selects without a heap (~460 heap insertions with
// unpredictable branches cost more than the GEMV): the scores are dealt into 2k groups, and the
// k-th largest group maximum is a bound that at least k scores reach (one per group), so nothing
// below it can be in the top k. About 1.35k candidates pass it; only those are keyed and ordered.
// Later item blocks keep what ranks before the k-th best so far. The order is the heap's (score
// descending, then the lower row), so both paths return the same ids in the same order.
//
// Exclusions, for the two cases evaluation needs:
//  * exclude(label): never return this item (the padding row 0 of an embedding table: build the
//    index on the whole table and call index.exclude(0)).
//  * ExcludeLists: per-query labels to leave out (e.g. a user's training history).
// Excluded items are masked with NaN in the score tile; a NaN never enters a heap or a candidate list.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

/// Similarity used by the retrieval indexes.
enum class Metric : std::uint8_t { inner_product, cosine };

inline const char* metric_name(Metric m) { return m == Metric::cosine ? "cosine" : "inner_product"; }

/// "inner_product" (also "ip", "dot") or "cosine" (also "cos").
inline Metric parse_metric(const std::string& s) {
  if (s == "inner_product" || s == "ip" || s == "dot") return Metric::inner_product;
  if (s == "cosine" || s == "cos") return Metric::cosine;
  detail::throw_error<ConfigError>("parse_metric: unknown metric '", s, "' (expects inner_product or cosine)");
}

/// Label of an empty result slot.
constexpr std::int64_t kNoLabel = -1;

/// Batched search output: scores f32 [Q, k] and labels i32 [Q, k], best first.
struct SearchResult {
  Tensor scores;
  Tensor ids;
};

/// Per-query labels to leave out of the results (CSR: list q holds labels[offsets[q], offsets[q+1])).
class ExcludeLists {
 public:
  ExcludeLists() : offsets_{0} {}
  /// Appends the next query's list.
  void add(const std::int64_t* labels, std::int64_t n) {
    labels_.insert(labels_.end(), labels, labels + n);
    offsets_.push_back(static_cast<std::int64_t>(labels_.size()));
  }
  template <class Id>
  void add(const std::vector<Id>& labels) {
    for (Id l : labels) labels_.push_back(static_cast<std::int64_t>(l));
    offsets_.push_back(static_cast<std::int64_t>(labels_.size()));
  }
  std::int64_t num_lists() const { return static_cast<std::int64_t>(offsets_.size()) - 1; }
  const std::int64_t* list(std::int64_t q) const { return labels_.data() + offsets_[q]; }
  std::int64_t list_size(std::int64_t q) const { return offsets_[q + 1] - offsets_[q]; }

 private:
  std::vector<std::int64_t> offsets_;
  std::vector<std::int64_t> labels_;
};

namespace detail {

/// A kept candidate: score and item row.
struct TopkEntry {
  float score;
  std::int32_t row;
};

/// Is a worse than b? Lower score, or equal score and higher row.
inline bool topk_worse(const TopkEntry& a, const TopkEntry& b) {
  return a.score < b.score || (a.score == b.score && a.row > b.row);
}

/// Fills a heap with k sentinels that any real candidate (even one scoring -inf) displaces.
inline void topk_reset(TopkEntry* heap, std::int64_t k) {
  for (std::int64_t i = 0; i < k; ++i) heap[i] = {-std::numeric_limits<float>::infinity(),
                                                   std::numeric_limits<std::int32_t>::max()};
}

/// Replaces the heap top (the worst kept) with e and restores the heap.
inline void topk_replace_top(TopkEntry* heap, std::int64_t k, TopkEntry e) {
  std::int64_t i = 0;
  for (;;) {
    std::int64_t c = 2 * i + 1;
    if (c >= k) break;
    if (c + 1 < k && topk_worse(heap[c + 1], heap[c])) ++c;
    if (!topk_worse(heap[c], e)) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = e;
}

/// Offers scores s[0, n) of rows row0.. to the heap. NaN scores never enter.
inline void topk_scan(const float* s, std::int64_t n, std::int32_t row0, TopkEntry* heap, std::int64_t k) {
  float worst = heap[0].score;
  for (std::int64_t j = 0; j < n; ++j) {
    const float v = s[j];
    if (v < worst) continue;
    const TopkEntry e{v, static_cast<std::int32_t>(row0 + j)};
    if (!topk_worse(heap[0], e)) continue;  // also rejects NaN
    topk_replace_top(heap, k, e);
    worst = heap[0].score;
  }
}

/// Sorts the heap best first (in place).
inline void topk_sort(TopkEntry* heap, std::int64_t k) {
  std::sort(heap, heap + k, [](const TopkEntry& a, const TopkEntry& b) { return topk_worse(b, a); });
}

/// Ordering key of a candidate for search_one: a smaller key ranks first (higher score, then the
/// lower row: the heap's order), so candidates sort as plain integers. High 32 bits: the score's
/// bits mapped to descending unsigned order, -0 as +0 (the two compare equal, so their tie goes
/// to the row as in the heap). Low 32 bits: row << 1 (rows < 2^31 - 1), plus 1 for a -0 score so
/// that topk_key_score returns the exact float. NaN is never keyed.
inline std::uint64_t topk_rank_key(float v, std::int32_t row) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const std::uint32_t neg_zero = u == 0x80000000u;
  if (neg_zero) u = 0;
  const std::uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<std::uint64_t>(~ascending) << 32) | (static_cast<std::uint32_t>(row) << 1) | neg_zero;
}
inline std::int32_t topk_key_row(std::uint64_t key) { return static_cast<std::int32_t>((key & 0xffffffffu) >> 1); }
inline float topk_key_score(std::uint64_t key) {
  if (key & 1u) return -0.0f;
  const std::uint32_t ascending = ~static_cast<std::uint32_t>(key >> 32);
  const std::uint32_t u = (ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

/// A lower bound for the k-th largest of s[0, n) (n >= 2k), or -inf: the scores are dealt into
/// 2k groups (group i holds s[i], s[i + 2k], ...) and the bound is the k-th largest group maximum.
/// Each of those k groups holds a score at least that high, so a score below it cannot be in the
/// top k. NaN is ignored; a bound of -inf lets every non-NaN score through. `maxima` holds 2k
/// floats. Strided groups make the maxima one vectorisable pass.
inline float topk_group_bound(const float* s, std::int64_t n, std::int64_t k, float* maxima) {
  const std::int64_t groups = 2 * k;
  std::fill(maxima, maxima + groups, -std::numeric_limits<float>::infinity());
  for (std::int64_t r = 0; r < n; r += groups) {
    const float* p = s + r;
    const std::int64_t m = std::min(groups, n - r);
    for (std::int64_t i = 0; i < m; ++i) maxima[i] = p[i] > maxima[i] ? p[i] : maxima[i];  // false for NaN
  }
  std::nth_element(maxima, maxima + (k - 1), maxima + groups, [](float a, float b) { return a > b; });
  return maxima[k - 1];
}

/// Offsets j of the scores s[j] >= t (never NaN) into picked[0, count), returns count. Branch-free
/// (about 1 in 30 passes, unpredictably): every offset is written, and kept only if it passes, so
/// picked holds n + 1 entries.
inline std::int64_t topk_pick(const float* s, std::int64_t n, float t, std::int32_t* picked) {
  std::int64_t c = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    picked[c] = static_cast<std::int32_t>(j);
    c += s[j] >= t;
  }
  return c;
}

/// search_one's selection: the top k of scores that arrive block by block, without a heap.
///   reserve(k, block); start(k); add(s, n, row0) per block (rows ascending); finish() -> count;
///   then score(j), row(j) for j < count, best first.
/// Until k candidates are known, a block is cut by topk_group_bound and picked branch-free. Then
/// nth_element finds the k-th best, and later blocks add only what ranks before it; candidates
/// pile up to 2k before the next nth_element (one per block would cost O(k) per block for the
/// handful of items a late block adds). Allocates only in reserve.
class TopkSelector {
 public:
  void reserve(std::int64_t k, std::int64_t block) {
    const auto b = static_cast<std::size_t>(std::max<std::int64_t>(block, 1));
    const auto kk = static_cast<std::size_t>(std::max<std::int64_t>(k, 0));
    if (maxima_.size() < b / 2) maxima_.resize(b / 2);  // 2k group maxima, used when 4k <= block
    if (picked_.size() < b + 1) picked_.resize(b + 1);
    if (keys_.size() < 2 * kk + b) keys_.resize(2 * kk + b);  // up to 2k kept + one block's additions
  }
  void start(std::int64_t k) {
    k_ = k;
    c_ = 0;
    kth_ = kNone;
  }
  /// Offers s[0, n) as rows row0, row0 + 1, ... (n <= the reserved block; NaN never selected).
  void add(const float* s, std::int64_t n, std::int32_t row0) {
    std::uint64_t* keys = keys_.data();
    std::int64_t c = c_;
    if (kth_ != kNone) {  // at least k candidates rank at or before kth_
      const std::uint64_t kth = kth_;
      const float t = topk_key_score(kth);
      auto offer = [&](std::int64_t j) {
        if (!(s[j] >= t)) return;
        const std::uint64_t key = topk_rank_key(s[j], static_cast<std::int32_t>(row0 + j));
        if (key < kth) keys[c++] = key;
      };
      // Almost nothing passes once k good items are known: one branch per 8 scores (a branch per
      // score ran at half the speed of the heap's scan). Compares, not a max, so that NaN (false
      // in every compare) can never hide a passing score.
      std::int64_t j = 0;
      for (; j + 8 <= n; j += 8) {
        const float* p = s + j;
        const bool any = (p[0] >= t) | (p[1] >= t) | (p[2] >= t) | (p[3] >= t) | (p[4] >= t) | (p[5] >= t) |
                         (p[6] >= t) | (p[7] >= t);
        if (any)
          for (int l = 0; l < 8; ++l) offer(j + l);
      }
      for (; j < n; ++j) offer(j);
    } else {
      const float t = n >= 4 * k_ ? topk_group_bound(s, n, k_, maxima_.data()) : -std::numeric_limits<float>::infinity();
      std::int32_t* picked = picked_.data();
      const std::int64_t m = topk_pick(s, n, t, picked);
      for (std::int64_t i = 0; i < m; ++i) keys[c++] = topk_rank_key(s[picked[i]], row0 + picked[i]);
    }
    if (c >= (kth_ == kNone ? k_ : 2 * k_)) {
      std::nth_element(keys, keys + (k_ - 1), keys + c);  // keys[k - 1] becomes the k-th best
      c = k_;
      kth_ = keys[k_ - 1];
    }
    c_ = c;
  }
  /// Orders the best k (or all, when fewer are not NaN) first; returns how many there are.
  std::int64_t finish() {
    if (c_ > k_) {
      std::nth_element(keys_.data(), keys_.data() + (k_ - 1), keys_.data() + c_);
      c_ = k_;
    }
    std::sort(keys_.data(), keys_.data() + c_);
    return c_;
  }
  float score(std::int64_t j) const { return topk_key_score(keys_[static_cast<std::size_t>(j)]); }
  std::int32_t row(std::int64_t j) const { return topk_key_row(keys_[static_cast<std::size_t>(j)]); }

 private:
  static constexpr std::uint64_t kNone = ~std::uint64_t(0);  // above every real key
  std::vector<float> maxima_;
  std::vector<std::int32_t> picked_;
  std::vector<std::uint64_t> keys_;
  std::int64_t k_ = 0, c_ = 0;
  std::uint64_t kth_ = kNone;
};

/// x / max(|x|, 1e-12), like torch.nn.functional.normalize.
inline void normalize_row(const float* x, float* y, std::int64_t d) {
  double ss = 0;
  for (std::int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * x[j];
  const float inv = static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-12));
  for (std::int64_t j = 0; j < d; ++j) y[j] = x[j] * inv;
}

inline bool is_zero_row(const float* x, std::int64_t d) {
  for (std::int64_t j = 0; j < d; ++j)
    if (x[j] != 0.0f) return false;
  return true;
}

/// Output labels are int32 (what tensors hold) or int64; checked before any parallel region,
/// because an exception must never leave an OpenMP thread.
template <class Label>
inline void check_label_type(bool fits_i32, std::int64_t max_label, const char* who) {
  static_assert(std::is_same<Label, std::int32_t>::value || std::is_same<Label, std::int64_t>::value,
                "labels are written as int32 or int64");
  if (std::is_same<Label, std::int32_t>::value)
    RECHUB_CHECK_AS(ConfigError, fits_i32, who, ": label ", max_label,
                    " does not fit in int32; call search_into with int64 labels");
}

}  // namespace detail

/// Brute-force top-k over an owned copy of an item matrix [N, D].
class ExactIndex {
 public:
  /// Items per score tile column; Qt * kBlockItems * 4 bytes = 1 MB.
  static constexpr std::int64_t kBlockItems = 4096;
  static constexpr std::int64_t kTileQueries = 64;

  /// Reusable buffers for search_one: after construction a search allocates nothing.
  class Scratch {
   public:
    Scratch() = default;
    Scratch(const ExactIndex& index, std::int64_t max_k) { reserve(index, max_k); }
    void reserve(const ExactIndex& index, std::int64_t max_k) {
      if (static_cast<std::int64_t>(query_.size()) < index.dim()) query_.resize(static_cast<std::size_t>(index.dim()));
      const std::int64_t block = std::min(kBlockItems, std::max<std::int64_t>(index.size(), 1));
      if (static_cast<std::int64_t>(scores_.size()) < block) scores_.resize(static_cast<std::size_t>(block));
      select_.reserve(max_k, block);
      if (rows_.capacity() < 256) rows_.reserve(256);  // exclusion lists up to 256 labels stay allocation-free
    }

   private:
    friend class ExactIndex;
    std::vector<float> query_, scores_;
    detail::TopkSelector select_;
    std::vector<std::int32_t> rows_;
  };

  ExactIndex() = default;

  /// Index over `items` [N, D] (copied); labels[i] names row i (default: the row number).
  explicit ExactIndex(const Tensor& items, Metric metric = Metric::inner_product,
                      std::vector<std::int64_t> labels = {})
      : metric_(metric), labels_(std::move(labels)) {
    RECHUB_CHECK_SHAPE(items.ndim() == 2 && items.dtype() == DType::f32 && items.device() == Device::cpu,
                       "ExactIndex: items must be a float32 [N, D] cpu tensor, got ", items.shape().str(), " ",
                       dtype_name(items.dtype()));
    RECHUB_CHECK_SHAPE(items.dim(0) < std::numeric_limits<std::int32_t>::max(), "ExactIndex: ", items.dim(0),
                       " items, at most 2^31 - 2 supported");
    n_ = items.dim(0);
    d_ = items.dim(1);
    items_ = items.clone();
    if (metric_ == Metric::cosine) {
      float* x = items_.f32();
      for (std::int64_t i = 0; i < n_; ++i) detail::normalize_row(x + i * d_, x + i * d_, d_);
    }
    if (!labels_.empty()) {
      RECHUB_CHECK_SHAPE(static_cast<std::int64_t>(labels_.size()) == n_, "ExactIndex: ", labels_.size(),
                         " labels for ", n_, " items");
      label_rows_.reserve(labels_.size());
      for (std::int64_t i = 0; i < n_; ++i) {
        RECHUB_CHECK_AS(ConfigError, labels_[i] >= 0, "ExactIndex: label ", labels_[i], " of row ", i,
                        " is negative (-1 marks empty slots)");
        RECHUB_CHECK_AS(ConfigError, label_rows_.emplace(labels_[i], static_cast<std::int32_t>(i)).second,
                        "ExactIndex: label ", labels_[i], " appears twice (rows ", label_rows_[labels_[i]], " and ", i,
                        ")");
        max_label_ = std::max(max_label_, labels_[i]);
      }
    } else {
      max_label_ = n_ - 1;
    }
    scratch_.reserve(*this, 0);
  }

  std::int64_t size() const { return n_; }
  std::int64_t dim() const { return d_; }
  Metric metric() const { return metric_; }
  /// The stored (normalised when cosine) item matrix.
  const Tensor& items() const { return items_; }
  std::int64_t label_of(std::int64_t row) const { return labels_.empty() ? row : labels_[row]; }
  /// Row of a label, or -1 when the index does not hold it.
  std::int64_t row_of(std::int64_t label) const {
    if (labels_.empty()) return label >= 0 && label < n_ ? label : -1;
    auto it = label_rows_.find(label);
    return it == label_rows_.end() ? -1 : it->second;
  }

  /// Never return `label` again (e.g. the padding row 0 of an embedding table).
  void exclude(std::int64_t label) {
    const std::int64_t r = row_of(label);
    RECHUB_CHECK_AS(ConfigError, r >= 0, "ExactIndex::exclude: label ", label, " is not in the index");
    auto it = std::lower_bound(excluded_rows_.begin(), excluded_rows_.end(), static_cast<std::int32_t>(r));
    if (it == excluded_rows_.end() || *it != r) excluded_rows_.insert(it, static_cast<std::int32_t>(r));
  }
  std::int64_t num_excluded() const { return static_cast<std::int64_t>(excluded_rows_.size()); }

  /// Top-k for each query row of `queries` [Q, D]; `exclude` has one list per query (or is null).
  SearchResult search(const Tensor& queries, std::int64_t k, const ExcludeLists* exclude = nullptr) const {
    check_queries("ExactIndex::search", queries);
    RECHUB_CHECK_AS(ConfigError, k >= 1, "ExactIndex::search: k must be >= 1, got ", k);
    const std::int64_t q = queries.dim(0);
    SearchResult r{Tensor::empty({q, k}), Tensor::empty({q, k}, DType::i32)};
    search_into(queries.f32(), q, k, r.scores.f32(), r.ids.i32(), exclude);
    return r;
  }

  /// Raw batched search: queries [Q, D] -> scores [Q, k], labels [Q, k]. Query q uses exclusion list
  /// q / queries_per_list (several interest vectors of one user share the user's list).
  template <class Label>
  void search_into(const float* queries, std::int64_t nq, std::int64_t k, float* scores, Label* labels,
                   const ExcludeLists* exclude = nullptr, std::int64_t queries_per_list = 1) const {
    RECHUB_CHECK_AS(ConfigError, k >= 1, "ExactIndex::search: k must be >= 1, got ", k);
    RECHUB_CHECK_AS(ConfigError, queries_per_list >= 1, "ExactIndex::search: queries_per_list must be >= 1");
    detail::check_label_type<Label>(max_label_ <= std::numeric_limits<std::int32_t>::max(), max_label_,
                                    "ExactIndex::search");
    if (exclude)
      RECHUB_CHECK_SHAPE(exclude->num_lists() * queries_per_list == nq, "ExactIndex::search: ", exclude->num_lists(),
                         " exclusion lists for ", nq, " queries (", queries_per_list, " per list)");
    parallel_for(nq, n_ * d_ + 1, [&](std::int64_t qb, std::int64_t qe) {
      const std::int64_t tile = std::min<std::int64_t>(kTileQueries, qe - qb);
      std::vector<float> tile_scores(static_cast<std::size_t>(tile * std::min(kBlockItems, std::max<std::int64_t>(n_, 1))));
      std::vector<float> normed(metric_ == Metric::cosine ? static_cast<std::size_t>(tile * d_) : 0);
      std::vector<detail::TopkEntry> heaps(static_cast<std::size_t>(tile * k));
      std::vector<std::int32_t> ex_rows;
      std::vector<std::int64_t> ex_off(static_cast<std::size_t>(tile + 1));
      for (std::int64_t t0 = qb; t0 < qe; t0 += tile) {
        const std::int64_t nt = std::min(tile, qe - t0);
        const float* qp = queries + t0 * d_;
        if (metric_ == Metric::cosine) {
          for (std::int64_t i = 0; i < nt; ++i) detail::normalize_row(qp + i * d_, normed.data() + i * d_, d_);
          qp = normed.data();
        }
        // Resolve each query's excluded labels to sorted rows once per tile.
        ex_rows.clear();
        ex_off[0] = 0;
        for (std::int64_t i = 0; i < nt; ++i) {
          const std::size_t start = ex_rows.size();
          if (exclude) {
            const std::int64_t list = (t0 + i) / queries_per_list;
            const std::int64_t* ls = exclude->list(list);
            for (std::int64_t j = 0, m = exclude->list_size(list); j < m; ++j) {
              const std::int64_t r = row_of(ls[j]);
              if (r >= 0) ex_rows.push_back(static_cast<std::int32_t>(r));
            }
          }
          std::sort(ex_rows.begin() + static_cast<std::ptrdiff_t>(start), ex_rows.end());
          ex_off[i + 1] = static_cast<std::int64_t>(ex_rows.size());
          detail::topk_reset(heaps.data() + i * k, k);
        }
        for (std::int64_t b0 = 0; b0 < n_; b0 += kBlockItems) {
          const std::int64_t nb = std::min(kBlockItems, n_ - b0);
          detail::gemm(false, true, nt, nb, d_, 1.0f, qp, d_, items_.f32() + b0 * d_, d_, 0.0f, tile_scores.data(), nb);
          for (std::int64_t i = 0; i < nt; ++i) {
            float* s = tile_scores.data() + i * nb;
            mask_rows(s, b0, nb, excluded_rows_.data(), excluded_rows_.data() + excluded_rows_.size());
            mask_rows(s, b0, nb, ex_rows.data() + ex_off[i], ex_rows.data() + ex_off[i + 1]);
            detail::topk_scan(s, nb, static_cast<std::int32_t>(b0), heaps.data() + i * k, k);
          }
        }
        for (std::int64_t i = 0; i < nt; ++i) {
          write_out(heaps.data() + i * k, k, scores + (t0 + i) * k, labels + (t0 + i) * k);
        }
      }
    });
  }

  /// One query, no threads, no allocation once `scratch` holds k entries (serving path).
  template <class Label>
  void search_one(const float* query, std::int64_t k, float* scores, Label* labels, Scratch& scratch,
                  const std::int64_t* exclude = nullptr, std::int64_t n_exclude = 0) const {
    RECHUB_CHECK_AS(ConfigError, k >= 1, "ExactIndex::search_one: k must be >= 1, got ", k);
    detail::check_label_type<Label>(max_label_ <= std::numeric_limits<std::int32_t>::max(), max_label_,
                                    "ExactIndex::search_one");
    scratch.reserve(*this, k);
    const float* qp = query;
    if (metric_ == Metric::cosine) {
      detail::normalize_row(query, scratch.query_.data(), d_);
      qp = scratch.query_.data();
    }
    auto& rows = scratch.rows_;
    rows.clear();
    for (std::int64_t j = 0; j < n_exclude; ++j) {
      const std::int64_t r = row_of(exclude[j]);
      if (r >= 0) rows.push_back(static_cast<std::int32_t>(r));
    }
    std::sort(rows.begin(), rows.end());
    detail::TopkSelector& select = scratch.select_;
    select.start(k);
    float* s = scratch.scores_.data();
    for (std::int64_t b0 = 0; b0 < n_; b0 += kBlockItems) {
      const std::int64_t nb = std::min(kBlockItems, n_ - b0);
      // A compile-time matrix * vector product: Eigen's GEMV kernel, which unlike its GEMM path
      // (taken by gemm_serial even for one row) allocates no blocking buffers.
      Eigen::Map<Eigen::VectorXf>(s, nb).noalias() =
          Eigen::Map<const detail::RowMat>(items_.f32() + b0 * d_, nb, d_) * Eigen::Map<const Eigen::VectorXf>(qp, d_);
      mask_rows(s, b0, nb, excluded_rows_.data(), excluded_rows_.data() + excluded_rows_.size());
      mask_rows(s, b0, nb, rows.data(), rows.data() + rows.size());
      select.add(s, nb, static_cast<std::int32_t>(b0));
    }
    const std::int64_t c = select.finish();
    for (std::int64_t j = 0; j < k; ++j) {
      scores[j] = j < c ? select.score(j) : -std::numeric_limits<float>::infinity();
      labels[j] = static_cast<Label>(j < c ? label_of(select.row(j)) : kNoLabel);
    }
  }

  /// search_one with the index's own scratch: not safe to call from two threads at once.
  template <class Label>
  void search_one(const float* query, std::int64_t k, float* scores, Label* labels, const std::int64_t* exclude = nullptr,
                  std::int64_t n_exclude = 0) {
    search_one(query, k, scores, labels, scratch_, exclude, n_exclude);
  }

 private:
  void check_queries(const char* who, const Tensor& q) const {
    RECHUB_CHECK_SHAPE(q.ndim() == 2 && q.dtype() == DType::f32 && q.device() == Device::cpu, who,
                       ": queries must be a float32 [Q, D] cpu tensor, got ", q.shape().str(), " ", dtype_name(q.dtype()));
    RECHUB_CHECK_SHAPE(q.dim(1) == d_, who, ": queries ", q.shape().str(), " do not match items [", n_, ", ", d_,
                       "] (expects last dim ", d_, ")");
  }

  /// NaN-masks the rows of [first, last) (sorted) that fall in [b0, b0 + nb).
  static void mask_rows(float* s, std::int64_t b0, std::int64_t nb, const std::int32_t* first, const std::int32_t* last) {
    if (first == last) return;
    const std::int32_t* it = std::lower_bound(first, last, static_cast<std::int32_t>(b0));
    for (; it != last && *it < b0 + nb; ++it) s[*it - b0] = std::numeric_limits<float>::quiet_NaN();
  }

  template <class Label>
  void write_out(detail::TopkEntry* heap, std::int64_t k, float* scores, Label* labels) const {
    detail::topk_sort(heap, k);
    for (std::int64_t j = 0; j < k; ++j) {
      const bool empty = heap[j].row == std::numeric_limits<std::int32_t>::max();
      scores[j] = empty ? -std::numeric_limits<float>::infinity() : heap[j].score;
      labels[j] = static_cast<Label>(empty ? kNoLabel : label_of(heap[j].row));
    }
  }

  Tensor items_;
  std::int64_t n_ = 0, d_ = 0, max_label_ = -1;
  Metric metric_ = Metric::inner_product;
  std::vector<std::int64_t> labels_;
  std::unordered_map<std::int64_t, std::int32_t> label_rows_;
  std::vector<std::int32_t> excluded_rows_;
  Scratch scratch_;
};

}  // namespace rechub
