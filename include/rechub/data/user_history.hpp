#pragma once
// A serving request for one user: the user's profile columns and the most recent history
// (every interaction, not only the training part), padded like the training samples.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "rechub/data/dataset.hpp"
#include "rechub/data/samples.hpp"

namespace rechub {

/// Items of user `user` (encoded id) in time order.
inline std::vector<std::int32_t> user_items(const Interactions& data, std::int32_t user) {
  std::vector<std::size_t> rows;
  for (std::size_t r = 0; r < data.size(); ++r)
    if (data.user[r] == user) rows.push_back(r);
  std::stable_sort(rows.begin(), rows.end(),
                   [&](std::size_t a, std::size_t b) { return data.timestamp[a] < data.timestamp[b]; });
  std::vector<std::int32_t> items;
  for (auto r : rows) items.push_back(data.item[r]);
  return items;
}

/// One-row batch from a history the caller already holds (`items`: the user's items in time order,
/// e.g. from a service's history store): user_col, user profile columns, hist_<item_col> and
/// hist_<attr> for opt.item_attribute_cols.
inline Dataset user_request(const Interactions& data, std::int32_t user, const std::vector<std::int32_t>& items,
                            const MatchSampleOptions& opt) {
  RECHUB_CHECK_AS(DataError, user >= 1 && user <= data.num_users(), "user_request: user code ", user,
                  " out of range 1..", data.num_users());
  Dataset d;
  d.set(data.user_col, Tensor::from_vector({1}, &user));
  for (const auto& c : data.user_features) d.set(c.name, Tensor::from_vector({1}, &c.codes[static_cast<std::size_t>(user)]));
  const std::int64_t L = opt.seq_max_len;
  Tensor hist = Tensor::empty({1, L}, DType::i32);
  pad_sequence(hist.i32(), L, items.data(), static_cast<std::int64_t>(items.size()), opt.padding, opt.truncating);
  d.set("hist_" + data.item_col, hist);
  for (const auto& attr : opt.item_attribute_cols) {
    const ProfileColumn* c = data.item_feature(attr);
    RECHUB_CHECK_AS(ConfigError, c != nullptr, "user_request: no item feature '", attr, "'");
    std::vector<std::int32_t> a(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) a[i] = c->codes[static_cast<std::size_t>(items[i])];
    Tensor h = Tensor::empty({1, L}, DType::i32);
    pad_sequence(h.i32(), L, a.data(), static_cast<std::int64_t>(a.size()), opt.padding, opt.truncating);
    d.set("hist_" + attr, h);
  }
  std::int32_t n = static_cast<std::int32_t>(items.size());
  d.set("histlen_" + data.item_col, Tensor::from_vector({1}, &n));
  return d;
}

/// One-row batch for user `user`, its history read from `data` (a scan of the whole log).
inline Dataset user_request(const Interactions& data, std::int32_t user, const MatchSampleOptions& opt) {
  RECHUB_CHECK_AS(DataError, user >= 1 && user <= data.num_users(), "user_request: user code ", user,
                  " out of range 1..", data.num_users());
  return user_request(data, user, user_items(data, user), opt);
}

}  // namespace rechub
