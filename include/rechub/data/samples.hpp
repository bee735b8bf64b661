#pragma once
// Sequence samples for matching models: Torch-RecHub's generate_seq_feature_match followed by
// gen_model_input, fused into one linear pass that writes straight into the output tensors.
//
// Protocol (torch_rechub/utils/match.py):
//  * interactions sorted by timestamp (we sort stably: ties keep input order; pandas'
//    default quicksort leaves the order of ties unspecified), grouped by user in id order;
//  * users with fewer than min_item interactions are dropped and counted (n_cold_users);
//  * for i in 1..len-1 the sample is (history = items[:i], target = items[i]); the sample with
//    i = len-1 (target = the user's last item, history = all earlier items) is the test
//    sample, the others are training samples. Users with one interaction give no sample;
//  * mode 0 point-wise: per sample a label-1 row with the target and neg_ratio label-0 rows
//    with the same history whose item column holds a negative;
//    mode 1 pair-wise: neg_ratio is forced to 1, column "neg_items" [N] holds one negative;
//    mode 2 list-wise: neg_ratio > 0 required, column "neg_items" [N, neg_ratio];
//  * negatives come from the global item distribution (negative_sampler.hpp) and may equal the
//    target or a history item: Torch-RecHub does not exclude them, neither do we;
//  * "histlen_<item>" is the UNtruncated history length i (Torch-RecHub's len(hist_item));
//    consumers that mask padded positions must clip it to seq_max_len;
//  * histories hist_<item> and hist_<attr> are padded/truncated to seq_max_len like Keras
//    pad_sequences (value 0, padding/truncating 'pre' or 'post');
//  * profiles are joined like gen_model_input's left merges: every user feature by the row's
//    user, every item feature by the row's item column (for mode-0 negative rows: the negative);
//  * training rows are shuffled (Fisher-Yates, seeded). Torch-RecHub also shuffles the test
//    rows; we keep them in user-id order by default (shuffle_test) since order never affects
//    the metrics and a stable order is easier to join with the targets.
//  * the test set carries "label" = 1 in every mode (Torch-RecHub names that constant column
//    after the training set's last column, i.e. "neg_items" in modes 1/2; it is unused).
//
// Column names come from the Interactions (user_col, item_col, feature names), never from
// MovieLens: with user_col "user_id" and item_col "movie_id" the training set of mode 2 is
//   user_id [N], movie_id [N], hist_movie_id [N, L], histlen_movie_id [N], hist_cate_id [N, L],
//   neg_items [N, k], gender, age, occupation, zip [N] (user profile), cate_id [N] (item profile).
// ids are int32, "label" is float32.
//
// Cost: O(interactions * (L + k)) with one allocation per output column; every training row's
// negatives come from that row's own Rng stream, so the result does not depend on the threads.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/data/dataset.hpp"
#include "rechub/data/interactions.hpp"
#include "rechub/data/negative_sampler.hpp"

namespace rechub {

/// Which end of a sequence gets padded or cut (Keras pad_sequences 'pre' / 'post').
enum class PadSide { pre, post };

/// "pre" or "post" -> PadSide; ConfigError naming `what` otherwise.
inline PadSide parse_pad_side(const std::string& s, const std::string& what = "padding") {
  if (s == "pre") return PadSide::pre;
  if (s == "post") return PadSide::post;
  detail::throw_error<ConfigError>(what, " '", s, "' (expects 'pre' or 'post')");
}

/// Writes seq[0, n) into out[0, len) padded with 0 / truncated like Keras pad_sequences.
inline void pad_sequence(std::int32_t* out, std::int64_t len, const std::int32_t* seq, std::int64_t n, PadSide padding,
                         PadSide truncating) {
  const std::int64_t m = n < len ? n : len;
  const std::int32_t* src = truncating == PadSide::pre ? seq + (n - m) : seq;
  if (padding == PadSide::pre) {
    std::fill(out, out + (len - m), 0);
    std::copy(src, src + m, out + (len - m));
  } else {
    std::copy(src, src + m, out);
    std::fill(out + m, out + len, 0);
  }
}

/// Options of generate_seq_feature_match (Torch-RecHub argument names).
struct MatchSampleOptions {
  int mode = 0;                                  // 0 point-wise, 1 pair-wise, 2 list-wise
  int neg_ratio = 0;                             // negatives per positive (mode 1 forces 1)
  int sample_method = 0;                         // 0 uniform, 1 count^0.75, 2 log(count+1)+1e-6, 3 RALM
  int min_item = 0;                              // users with fewer interactions are dropped
  std::int64_t seq_max_len = 50;                 // history length L after padding/truncation
  PadSide padding = PadSide::pre;
  PadSide truncating = PadSide::pre;
  std::vector<std::string> item_attribute_cols;  // item features to build hist_<col> for, e.g. {"cate_id"}
  std::uint64_t seed = 2022;
  bool shuffle = true;                           // shuffle the training rows (Torch-RecHub always does)
  bool shuffle_test = false;                     // shuffle the test rows too (see header comment)
};

/// Everything a matching experiment needs from one Interactions.
struct MatchData {
  Dataset train;   // training rows, columns as in the header comment
  Dataset test;    // one row per test user: user, target item, histories, label, profiles
  Dataset items;   // every item id 1..n with its item features (to embed all items)
  Dataset users;   // every user id 1..n with its user features
  std::vector<std::int32_t> test_targets;  // test row r's target item (= test[item_col])
  std::vector<std::int32_t> test_users;    // test row r's user (= test[user_col])
  std::vector<std::int64_t> item_counts;   // occurrences per item id over all interactions
  std::string user_col, item_col;
  std::int64_t n_cold_users = 0;      // users dropped by min_item
  std::int64_t n_train_samples = 0;   // (history, target) training samples, before negatives
  std::int64_t n_train_rows = 0;      // rows of `train` (mode 0: samples * (1 + neg_ratio))
  std::int64_t n_test = 0;            // rows of `test`
  int mode = 0, neg_ratio = 0;        // effective values (mode 1 forces neg_ratio = 1)
};

namespace detail {

// Checks that the columns have one length and every id is >= 1 (0 is padding); returns the
// largest user and item ids (encoders give them; hand-built interactions may leave them empty).
inline std::pair<std::int32_t, std::int32_t> id_ranges(const Interactions& data, const char* fn) {
  RECHUB_CHECK_AS(DataError, data.item.size() == data.user.size() && data.timestamp.size() == data.user.size(), fn,
                  ": interactions have ", data.user.size(), " users, ", data.item.size(), " items, ",
                  data.timestamp.size(), " timestamps");
  std::int32_t n_users = data.num_users(), n_items = data.num_items();
  for (std::int32_t u : data.user) {
    RECHUB_CHECK_AS(DataError, u >= 1, fn, ": user id ", u, " (ids start at 1, 0 is padding)");
    n_users = std::max(n_users, u);
  }
  for (std::int32_t it : data.item) {
    RECHUB_CHECK_AS(DataError, it >= 1, fn, ": item id ", it, " (ids start at 1, 0 is padding)");
    n_items = std::max(n_items, it);
  }
  return {n_users, n_items};
}

// Interactions grouped by user id (counting sort, stable) and, within a user, stably by time.
struct UserSequences {
  std::vector<std::int64_t> offset;  // user u owns positions [offset[u], offset[u+1])
  std::vector<std::int32_t> items;   // item per position
};

inline UserSequences group_by_user(const Interactions& data, std::int32_t n_users) {
  const std::size_t n = data.size();
  UserSequences g;
  g.offset.assign(static_cast<std::size_t>(n_users) + 2, 0);
  for (std::int32_t u : data.user) ++g.offset[static_cast<std::size_t>(u) + 1];
  for (std::size_t u = 1; u < g.offset.size(); ++u) g.offset[u] += g.offset[u - 1];
  std::vector<std::int64_t> order(n), fill(g.offset.begin(), g.offset.end() - 1);
  for (std::size_t r = 0; r < n; ++r) order[static_cast<std::size_t>(fill[static_cast<std::size_t>(data.user[r])]++)] =
      static_cast<std::int64_t>(r);
  const auto& ts = data.timestamp;
  auto by_time = [&ts](std::int64_t a, std::int64_t b) {
    return ts[static_cast<std::size_t>(a)] < ts[static_cast<std::size_t>(b)];
  };
  for (std::int32_t u = 1; u <= n_users; ++u) {
    auto b = order.begin() + g.offset[static_cast<std::size_t>(u)];
    auto e = order.begin() + g.offset[static_cast<std::size_t>(u) + 1];
    if (!std::is_sorted(b, e, by_time)) std::stable_sort(b, e, by_time);  // readers usually give sorted data
  }
  g.items.resize(n);
  for (std::size_t p = 0; p < n; ++p) g.items[p] = data.item[static_cast<std::size_t>(order[p])];
  return g;
}

// Fisher-Yates: perm is a uniformly random permutation of 0..n-1.
inline std::vector<std::int64_t> random_permutation(std::int64_t n, Rng rng) {
  std::vector<std::int64_t> perm(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = n - 1; i > 0; --i)
    std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
  return perm;
}

inline Tensor int_column(std::int64_t rows, std::int64_t width = 0) {
  return width > 0 ? Tensor::empty({rows, width}, DType::i32) : Tensor::empty({rows}, DType::i32);
}

}  // namespace detail

/// Builds training/test/item/user datasets from interactions (Torch-RecHub's
/// generate_seq_feature_match + gen_model_input; see the header comment for the exact protocol).
inline MatchData generate_seq_feature_match(const Interactions& data, const MatchSampleOptions& opt = {}) {
  const char* fn = "generate_seq_feature_match";
  RECHUB_CHECK_AS(ConfigError, opt.mode >= 0 && opt.mode <= 2, fn, ": mode ", opt.mode,
                  " (expects 0 point-wise, 1 pair-wise, 2 list-wise)");
  RECHUB_CHECK_AS(ConfigError, opt.neg_ratio >= 0, fn, ": neg_ratio ", opt.neg_ratio, " must be >= 0");
  RECHUB_CHECK_AS(ConfigError, opt.mode != 2 || opt.neg_ratio > 0, fn,
                  ": list-wise mode 2 needs neg_ratio > 0, got ", opt.neg_ratio);
  RECHUB_CHECK_AS(ConfigError, opt.sample_method >= 0 && opt.sample_method <= 3, fn, ": sample_method ",
                  opt.sample_method, " (expects 0 uniform, 1 word2vec, 2 log, 3 RALM)");
  RECHUB_CHECK_AS(ConfigError, opt.seq_max_len >= 1, fn, ": seq_max_len ", opt.seq_max_len, " must be >= 1");
  const std::pair<std::int32_t, std::int32_t> ids = detail::id_ranges(data, fn);
  const std::int32_t n_users = ids.first, n_items = ids.second;
  for (const auto& f : data.user_features)
    RECHUB_CHECK_AS(DataError, f.codes.size() >= static_cast<std::size_t>(n_users) + 1, fn, ": user feature '", f.name,
                    "' has codes for ", f.codes.size(), " ids, need ", n_users + 1);
  for (const auto& f : data.item_features)
    RECHUB_CHECK_AS(DataError, f.codes.size() >= static_cast<std::size_t>(n_items) + 1, fn, ": item feature '", f.name,
                    "' has codes for ", f.codes.size(), " ids, need ", n_items + 1);
  std::vector<const ProfileColumn*> attrs;
  for (const auto& a : opt.item_attribute_cols) {
    const ProfileColumn* c = data.item_feature(a);
    if (!c) {
      std::string have;
      for (const auto& f : data.item_features) have += (have.empty() ? "" : ", ") + f.name;
      detail::throw_error<ConfigError>(fn, ": no item feature '", a, "' for item_attribute_cols (have: ", have, ")");
    }
    attrs.push_back(c);
  }

  MatchData out;
  out.user_col = data.user_col;
  out.item_col = data.item_col;
  out.mode = opt.mode;
  out.neg_ratio = opt.mode == 1 ? 1 : opt.neg_ratio;
  const int k = out.neg_ratio;
  const std::int64_t L = opt.seq_max_len;
  out.item_counts = item_counts(data);
  out.item_counts.resize(static_cast<std::size_t>(n_items) + 1, 0);

  const detail::UserSequences g = detail::group_by_user(data, n_users);
  // Attribute sequences aligned with g.items, so hist_<attr> is padded from contiguous memory.
  std::vector<std::vector<std::int32_t>> attr_seq(attrs.size());
  for (std::size_t a = 0; a < attrs.size(); ++a) {
    attr_seq[a].resize(g.items.size());
    for (std::size_t p = 0; p < g.items.size(); ++p)
      attr_seq[a][p] = attrs[a]->codes[static_cast<std::size_t>(g.items[p])];
  }

  // Pass 1: rows per user -> row offsets.
  const std::int64_t rows_per_sample = opt.mode == 0 ? 1 + k : 1;
  std::vector<std::int64_t> train_off(static_cast<std::size_t>(n_users) + 2, 0), test_off(train_off);
  for (std::int32_t u = 1; u <= n_users; ++u) {
    const std::int64_t len = g.offset[static_cast<std::size_t>(u) + 1] - g.offset[static_cast<std::size_t>(u)];
    std::int64_t samples = 0, tests = 0;
    if (len > 0 && len < opt.min_item) ++out.n_cold_users;
    else if (len >= 2) {
      samples = len - 2;
      tests = 1;
    }
    out.n_train_samples += samples;
    train_off[static_cast<std::size_t>(u) + 1] = train_off[static_cast<std::size_t>(u)] + samples * rows_per_sample;
    test_off[static_cast<std::size_t>(u) + 1] = test_off[static_cast<std::size_t>(u)] + tests;
  }
  const std::int64_t N = train_off[static_cast<std::size_t>(n_users) + 1];
  const std::int64_t T = test_off[static_cast<std::size_t>(n_users) + 1];
  out.n_train_rows = N;
  out.n_test = T;

  const Rng root(opt.seed);
  std::vector<std::int64_t> perm_train, perm_test;
  if (opt.shuffle) perm_train = detail::random_permutation(N, root.fork(0));
  if (opt.shuffle_test) perm_test = detail::random_permutation(T, root.fork(1));
  const Rng neg_root = root.fork(2);
  NegativeSampler sampler;
  if (k > 0 && N > 0) sampler = NegativeSampler(out.item_counts, opt.sample_method);

  // Output columns, allocated once.
  const std::size_t n_attr = attrs.size(), n_uf = data.user_features.size(), n_if = data.item_features.size();
  Tensor tr_user = detail::int_column(N), tr_item = detail::int_column(N), tr_hist = detail::int_column(N, L),
         tr_len = detail::int_column(N), tr_label, tr_neg;
  std::vector<Tensor> tr_attr, tr_uf, tr_if, te_attr, te_uf, te_if;
  for (std::size_t a = 0; a < n_attr; ++a) tr_attr.push_back(detail::int_column(N, L));
  for (std::size_t f = 0; f < n_uf; ++f) tr_uf.push_back(detail::int_column(N));
  for (std::size_t f = 0; f < n_if; ++f) tr_if.push_back(detail::int_column(N));
  if (opt.mode == 0) tr_label = Tensor::empty({N}, DType::f32);
  else tr_neg = detail::int_column(N, opt.mode == 2 ? k : 0);
  Tensor te_user = detail::int_column(T), te_item = detail::int_column(T), te_hist = detail::int_column(T, L),
         te_len = detail::int_column(T), te_label = Tensor::full({T}, 1.0f);
  for (std::size_t a = 0; a < n_attr; ++a) te_attr.push_back(detail::int_column(T, L));
  for (std::size_t f = 0; f < n_uf; ++f) te_uf.push_back(detail::int_column(T));
  for (std::size_t f = 0; f < n_if; ++f) te_if.push_back(detail::int_column(T));

  // Pass 2: output row d holds generation-order row perm[d]. Walking the OUTPUT in order keeps
  // the writes (most of the bytes) sequential; only the short source reads are random. Each row's
  // negatives come from its own Rng stream (keyed by generation row), so any thread split gives
  // the same result.
  struct Sink {
    std::int32_t *user, *item, *hist, *len;
    std::vector<std::int32_t*> attr, uf, itf;
  };
  auto sink_of = [&](Tensor& c_user, Tensor& c_item, Tensor& c_hist, Tensor& c_len, std::vector<Tensor>& c_attr,
                     std::vector<Tensor>& c_uf, std::vector<Tensor>& c_if) {
    Sink sk{c_user.i32(), c_item.i32(), c_hist.i32(), c_len.i32(), {}, {}, {}};
    for (auto& t : c_attr) sk.attr.push_back(t.i32());
    for (auto& t : c_uf) sk.uf.push_back(t.i32());
    for (auto& t : c_if) sk.itf.push_back(t.i32());
    return sk;
  };
  const Sink tr = sink_of(tr_user, tr_item, tr_hist, tr_len, tr_attr, tr_uf, tr_if);
  const Sink te = sink_of(te_user, te_item, te_hist, te_len, te_attr, te_uf, te_if);
  // Row `dst` of `sk`: user u, history = the first i items of u's sequence, item column `item`.
  auto write_row = [&](const Sink& sk, std::int64_t dst, std::size_t u, std::int64_t i, std::int32_t item) {
    const std::int64_t base = g.offset[u];
    sk.user[dst] = static_cast<std::int32_t>(u);
    sk.item[dst] = item;
    pad_sequence(sk.hist + dst * L, L, g.items.data() + base, i, opt.padding, opt.truncating);
    sk.len[dst] = static_cast<std::int32_t>(i);
    for (std::size_t a = 0; a < n_attr; ++a)
      pad_sequence(sk.attr[a] + dst * L, L, attr_seq[a].data() + base, i, opt.padding, opt.truncating);
    for (std::size_t f = 0; f < n_uf; ++f) sk.uf[f][dst] = data.user_features[f].codes[u];
    for (std::size_t f = 0; f < n_if; ++f) sk.itf[f][dst] = data.item_features[f].codes[static_cast<std::size_t>(item)];
  };
  float* label = opt.mode == 0 ? tr_label.f32() : nullptr;
  std::int32_t* negs = opt.mode == 0 ? nullptr : tr_neg.i32();
  parallel_for(N, L * static_cast<std::int64_t>(1 + n_attr) + k, [&](std::int64_t db, std::int64_t de) {
    std::size_t u = 1;
    for (std::int64_t d = db; d < de; ++d) {
      const std::int64_t r = opt.shuffle ? perm_train[static_cast<std::size_t>(d)] : d;
      if (!(train_off[u] <= r && r < train_off[u + 1]))  // owner: last u with train_off[u] <= r
        u = static_cast<std::size_t>(std::upper_bound(train_off.begin() + 1, train_off.end(), r) - train_off.begin() - 1);
      const std::int64_t local = r - train_off[u];
      const std::int64_t i = 1 + local / rows_per_sample, j = local % rows_per_sample;
      const std::int32_t target = g.items[static_cast<std::size_t>(g.offset[u] + i)];
      if (opt.mode == 0) {
        std::int32_t item = target;
        if (j > 0) {
          Rng rng = neg_root.fork(static_cast<std::uint64_t>(r));
          item = sampler(rng);
        }
        write_row(tr, d, u, i, item);
        label[d] = j == 0 ? 1.0f : 0.0f;
      } else {
        write_row(tr, d, u, i, target);
        Rng rng = neg_root.fork(static_cast<std::uint64_t>(r));
        for (int q = 0; q < k; ++q) negs[d * k + q] = sampler(rng);
      }
    }
  });
  for (std::size_t u = 1; u <= static_cast<std::size_t>(n_users); ++u) {
    if (test_off[u + 1] == test_off[u]) continue;  // dropped, or fewer than 2 interactions
    const std::int64_t t = test_off[u], len = g.offset[u + 1] - g.offset[u];
    const std::int64_t dst = opt.shuffle_test ? perm_test[static_cast<std::size_t>(t)] : t;
    write_row(te, dst, u, len - 1, g.items[static_cast<std::size_t>(g.offset[u] + len - 1)]);
  }

  const std::string& uc = data.user_col;
  const std::string& ic = data.item_col;
  auto assemble = [&](Dataset& ds, Tensor& c_user, Tensor& c_item, Tensor& c_hist, Tensor& c_len,
                      std::vector<Tensor>& c_attr, std::vector<Tensor>& c_uf, std::vector<Tensor>& c_if,
                      const std::string& last_name, Tensor& last) {
    ds.set(uc, std::move(c_user));
    ds.set(ic, std::move(c_item));
    ds.set("hist_" + ic, std::move(c_hist));
    ds.set("histlen_" + ic, std::move(c_len));
    for (std::size_t a = 0; a < n_attr; ++a) ds.set("hist_" + attrs[a]->name, std::move(c_attr[a]));
    ds.set(last_name, std::move(last));
    for (std::size_t f = 0; f < n_uf; ++f) ds.set(data.user_features[f].name, std::move(c_uf[f]));
    for (std::size_t f = 0; f < n_if; ++f) ds.set(data.item_features[f].name, std::move(c_if[f]));
    RECHUB_CHECK_AS(ConfigError, ds.columns().size() == 5 + n_attr + n_uf + n_if, fn,
                    ": column names collide (got: ", ds.names_joined(), ")");
  };
  assemble(out.train, tr_user, tr_item, tr_hist, tr_len, tr_attr, tr_uf, tr_if, opt.mode == 0 ? "label" : "neg_items",
           opt.mode == 0 ? tr_label : tr_neg);
  assemble(out.test, te_user, te_item, te_hist, te_len, te_attr, te_uf, te_if, "label", te_label);
  const Tensor& tu = out.test[uc];
  const Tensor& ti = out.test[ic];
  out.test_users.assign(tu.i32(), tu.i32() + T);
  out.test_targets.assign(ti.i32(), ti.i32() + T);

  // Every item 1..n and every user 1..n with their profiles.
  Tensor all_items = detail::int_column(n_items);
  for (std::int32_t i = 0; i < n_items; ++i) all_items.i32()[i] = i + 1;
  out.items.set(ic, all_items);
  for (const auto& f : data.item_features)
    out.items.set(f.name, Tensor::from_vector({n_items}, f.codes.data() + 1));
  Tensor all_users = detail::int_column(n_users);
  for (std::int32_t u = 0; u < n_users; ++u) all_users.i32()[u] = u + 1;
  out.users.set(uc, all_users);
  for (const auto& f : data.user_features)
    out.users.set(f.name, Tensor::from_vector({n_users}, f.codes.data() + 1));
  return out;
}

}  // namespace rechub
