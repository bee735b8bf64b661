#pragma once
// Validation protocol: remove every user's last interaction (by time), so the samples built
// from what remains hold out the SECOND-to-last item as the "test" item. Recipes are tuned on
// that split, which never sees the real test item.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "rechub/data/interactions.hpp"

namespace rechub {

/// A copy of `data` without each user's latest interaction (ties: the later row in input order).
inline Interactions drop_last_interaction(const Interactions& data) {
  const std::size_t n = data.size();
  std::vector<std::int64_t> last(static_cast<std::size_t>(data.num_users()) + 1, -1);
  for (std::size_t r = 0; r < n; ++r) {
    std::int64_t& l = last[static_cast<std::size_t>(data.user[r])];
    if (l < 0 || data.timestamp[r] >= data.timestamp[static_cast<std::size_t>(l)]) l = static_cast<std::int64_t>(r);
  }
  std::vector<std::uint8_t> drop(n, 0);
  for (auto l : last)
    if (l >= 0) drop[static_cast<std::size_t>(l)] = 1;
  Interactions out = data;
  out.user.clear();
  out.item.clear();
  out.timestamp.clear();
  out.rating.clear();
  for (std::size_t r = 0; r < n; ++r) {
    if (drop[r]) continue;
    out.user.push_back(data.user[r]);
    out.item.push_back(data.item[r]);
    out.timestamp.push_back(data.timestamp[r]);
    if (!data.rating.empty()) out.rating.push_back(data.rating[r]);
  }
  return out;
}

}  // namespace rechub
