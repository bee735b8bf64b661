#pragma once
// Per-position training rows for sequence models trained on every position (SASRec, Kang &
// McAuley 2018; Klenitskiy & Vasilev 2023): one row per user instead of one row per
// (history, target) pair.
//
// Protocol, with the user's items s_0 .. s_{n-1} in time order (same grouping and stable time
// sort as generate_seq_feature_match):
//  * s_{n-1} is the test target (generate_seq_feature_match's test row) and appears in no row;
//  * the row's input is s_0 .. s_{n-3} and its target at each position is the next item:
//      hist_<item>[t] = s_j   ->   pos_<item>[t] = s_{j+1}
//    so the (history, target) pairs a row trains on are exactly generate_seq_feature_match's
//    training samples (target s_i after history s_0 .. s_{i-1}, i = 1 .. n-2);
//  * users with fewer than 3 interactions have no training target and give no row
//    (n_short_users counts them);
//  * rows are padded with 0 to seq_max_len, 'pre' by default (the newest position is the last
//    column, like the test histories) or 'post'; a user with more than seq_max_len positions
//    keeps the most recent ones (n_dropped_positions counts the lost targets), or, with
//    split_windows, is cut into several rows of seq_max_len positions, newest window last
//    (every target in exactly one row; the first positions of a window lose the context before it);
//  * neg_<item> [R, L, k]: k negatives per valid position (0 at padding) from the global item
//    distribution (negative_sampler.hpp methods 0..3), drawn from Rng(seed).fork(row), so the
//    result does not depend on anything but the data and the options. With exclude_seen a draw
//    that the user interacted with (any s_j) is redrawn, up to 32 times (Kang's sampler).
//
// Columns (R rows): <user_col> [R], hist_<item> [R, L], pos_<item> [R, L], neg_<item> [R, L, k]
// (absent when neg_ratio = 0), histlen_<item> [R] = number of valid positions. All int32.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/data/samples.hpp"

namespace rechub {

/// Options of generate_position_samples.
struct PositionSampleOptions {
  std::int64_t seq_max_len = 50;   // L
  int neg_ratio = 1;               // k negatives per position; 0 = no neg_<item> column
  int sample_method = 0;           // 0 uniform, 1 count^0.75, 2 log(count+1)+1e-6, 3 RALM
  bool exclude_seen = false;       // redraw negatives the user interacted with
  PadSide padding = PadSide::pre;  // where the padding goes; truncation always keeps the newest
  bool split_windows = false;      // long users: several rows instead of dropping old positions
  std::uint64_t seed = 2022;
};

/// The per-position training set and its counts.
struct PositionData {
  Dataset train;                           // columns as in the header comment
  std::vector<std::int64_t> item_counts;   // occurrences per item id over all interactions
  std::int64_t n_rows = 0;                 // rows of train
  std::int64_t n_positions = 0;            // valid (non-padding) positions = training targets
  std::int64_t n_users = 0;                // users with at least one row
  std::int64_t n_short_users = 0;          // users with 1 or 2 interactions (no training target)
  std::int64_t n_dropped_positions = 0;    // targets lost to truncation (split_windows off)
};

/// Builds one per-position training row per user (or per window), see the header comment.
inline PositionData generate_position_samples(const Interactions& data, const PositionSampleOptions& opt = {}) {
  const char* fn = "generate_position_samples";
  RECHUB_CHECK_AS(ConfigError, opt.seq_max_len >= 1, fn, ": seq_max_len ", opt.seq_max_len, " must be >= 1");
  RECHUB_CHECK_AS(ConfigError, opt.neg_ratio >= 0, fn, ": neg_ratio ", opt.neg_ratio, " must be >= 0");
  const std::pair<std::int32_t, std::int32_t> ids = detail::id_ranges(data, fn);
  const std::int32_t n_users = ids.first, n_items = ids.second;
  PositionData out;
  out.item_counts = item_counts(data);
  out.item_counts.resize(static_cast<std::size_t>(n_items) + 1, 0);
  const detail::UserSequences g = detail::group_by_user(data, n_users);
  const std::int64_t L = opt.seq_max_len;
  const int k = opt.neg_ratio;

  // Rows per user: positions m = n - 2 (inputs s_0 .. s_{n-3}), in windows of L when splitting.
  std::vector<std::int64_t> row_off(static_cast<std::size_t>(n_users) + 2, 0);
  for (std::int32_t u = 1; u <= n_users; ++u) {
    const std::int64_t n = g.offset[static_cast<std::size_t>(u) + 1] - g.offset[static_cast<std::size_t>(u)];
    const std::int64_t m = n >= 3 ? n - 2 : 0;
    std::int64_t rows = 0;
    if (n > 0 && n < 3) ++out.n_short_users;
    if (m > 0) {
      rows = opt.split_windows ? (m + L - 1) / L : 1;
      ++out.n_users;
      out.n_positions += std::min(m, rows * L);
      out.n_dropped_positions += m - std::min(m, rows * L);
    }
    row_off[static_cast<std::size_t>(u) + 1] = row_off[static_cast<std::size_t>(u)] + rows;
  }
  const std::int64_t R = row_off[static_cast<std::size_t>(n_users) + 1];
  out.n_rows = R;

  Tensor users = detail::int_column(R), hist = detail::int_column(R, L), pos = detail::int_column(R, L),
         len = detail::int_column(R), neg;
  if (k > 0) neg = Tensor::empty({R, L, k}, DType::i32);
  NegativeSampler sampler;
  if (k > 0 && R > 0) sampler = NegativeSampler(out.item_counts, opt.sample_method);
  const Rng root(opt.seed);
  std::vector<std::int32_t> seen;
  for (std::int32_t u = 1; u <= n_users; ++u) {
    const std::int64_t r0 = row_off[static_cast<std::size_t>(u)], r1 = row_off[static_cast<std::size_t>(u) + 1];
    if (r0 == r1) continue;
    const std::int32_t* s = g.items.data() + g.offset[static_cast<std::size_t>(u)];
    const std::int64_t m = g.offset[static_cast<std::size_t>(u) + 1] - g.offset[static_cast<std::size_t>(u)] - 2;
    if (opt.exclude_seen) {
      seen.assign(s, s + m + 2);
      std::sort(seen.begin(), seen.end());
    }
    for (std::int64_t r = r0; r < r1; ++r) {
      // Window r covers inputs [start, end); the newest window is the last row of the user.
      const std::int64_t end = m - (r1 - 1 - r) * L, start = std::max<std::int64_t>(0, end - L), c = end - start;
      const std::int64_t first = opt.padding == PadSide::pre ? L - c : 0;  // column of input s_start
      users.i32()[r] = u;
      len.i32()[r] = static_cast<std::int32_t>(c);
      std::int32_t *h = hist.i32() + r * L, *p = pos.i32() + r * L;
      std::fill(h, h + L, 0);
      std::fill(p, p + L, 0);
      for (std::int64_t j = 0; j < c; ++j) {
        h[first + j] = s[start + j];
        p[first + j] = s[start + j + 1];
      }
      if (k == 0) continue;
      std::int32_t* ng = neg.i32() + r * L * k;
      std::fill(ng, ng + L * k, 0);
      Rng rng = root.fork(static_cast<std::uint64_t>(r));
      for (std::int64_t j = 0; j < c * k; ++j) {
        std::int32_t d = sampler(rng);
        for (int tries = 0; opt.exclude_seen && tries < 32 && std::binary_search(seen.begin(), seen.end(), d); ++tries)
          d = sampler(rng);
        ng[first * k + j] = d;
      }
    }
  }
  const std::string& ic = data.item_col;
  out.train.set(data.user_col, std::move(users));
  out.train.set("hist_" + ic, std::move(hist));
  out.train.set("pos_" + ic, std::move(pos));
  if (k > 0) out.train.set("neg_" + ic, std::move(neg));
  out.train.set("histlen_" + ic, std::move(len));
  return out;
}

}  // namespace rechub
