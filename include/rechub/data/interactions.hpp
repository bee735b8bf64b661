#pragma once
// The in-memory form every reader produces and every sample generator consumes.
//
// Ids are label-encoded to 1..n (0 = padding), like Torch-RecHub's LabelEncoder()+1: codes are
// ranks of the raw values in sorted order (numerically when every raw value is an integer,
// else lexicographically). Profiles are joined by id once: user feature columns are indexed by
// the encoded user id, item feature columns by the encoded item id (row 0 unused).
#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "rechub/core/error.hpp"

namespace rechub {

/// Raw value <-> code 1..n. Saved with every model so retrieval answers in raw ids.
class LabelEncoder {
 public:
  LabelEncoder() = default;
  /// Builds codes from all raw values seen (duplicates allowed), sorted as documented above.
  static LabelEncoder fit(std::vector<std::string> values) {
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    bool numeric = !values.empty();
    for (const auto& v : values) numeric = numeric && is_integer(v);
    if (numeric)
      std::sort(values.begin(), values.end(),
                [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    LabelEncoder e;
    e.raw_ = std::move(values);
    e.index_.reserve(e.raw_.size());
    for (std::size_t i = 0; i < e.raw_.size(); ++i) e.index_.emplace(e.raw_[i], static_cast<std::int32_t>(i + 1));
    return e;
  }
  /// Code of a raw value; 0 when unknown.
  std::int32_t find(const std::string& raw) const {
    auto it = index_.find(raw);
    return it == index_.end() ? 0 : it->second;
  }
  /// Code of a raw value; throws DataError naming `what` when unknown.
  std::int32_t encode(const std::string& raw, const std::string& what = "id") const {
    std::int32_t c = find(raw);
    if (c == 0) throw DataError("LabelEncoder: unknown " + what + " '" + raw + "'");
    return c;
  }
  const std::string& decode(std::int32_t code) const {
    RECHUB_CHECK_AS(DataError, code >= 1 && code <= size(), "LabelEncoder: code ", code, " out of range 1..", size());
    return raw_[static_cast<std::size_t>(code - 1)];
  }
  /// Number of distinct raw values (codes are 1..size()).
  std::int32_t size() const { return static_cast<std::int32_t>(raw_.size()); }
  /// Embedding vocabulary size including the padding row 0.
  std::int32_t vocab_size() const { return size() + 1; }
  const std::vector<std::string>& raw_values() const { return raw_; }
  static LabelEncoder from_raw_values(std::vector<std::string> sorted_raw) {
    LabelEncoder e;
    e.raw_ = std::move(sorted_raw);
    for (std::size_t i = 0; i < e.raw_.size(); ++i) e.index_.emplace(e.raw_[i], static_cast<std::int32_t>(i + 1));
    return e;
  }

 private:
  static bool is_integer(const std::string& s) {
    if (s.empty() || s.size() > 18) return false;
    std::size_t i = (s[0] == '-') ? 1 : 0;
    if (i == s.size()) return false;
    for (; i < s.size(); ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  }
  std::vector<std::string> raw_;
  std::unordered_map<std::string, std::int32_t> index_;
};

/// A categorical profile column: codes[id] for every encoded id (codes[0] = 0, padding).
struct ProfileColumn {
  std::string name;
  std::vector<std::int32_t> codes;
  LabelEncoder encoder;
};

/// One row per interaction plus joined user/item profiles.
struct Interactions {
  std::string dataset;                 // "ml-1m", "ml-100k", "synthetic", or a CSV path
  std::string user_col = "user_id";    // Torch-RecHub column names
  std::string item_col = "movie_id";
  std::vector<std::int32_t> user;      // encoded user id per interaction
  std::vector<std::int32_t> item;      // encoded item id per interaction
  std::vector<std::int64_t> timestamp;
  std::vector<float> rating;           // empty when the source has none
  LabelEncoder user_ids, item_ids;
  std::vector<ProfileColumn> user_features;  // e.g. gender, age, occupation, zip
  std::vector<ProfileColumn> item_features;  // e.g. cate_id (first genre)
  std::vector<std::string> item_titles;      // by encoded item id ("" for 0); UTF-8

  std::size_t size() const { return user.size(); }
  std::int32_t num_users() const { return user_ids.size(); }
  std::int32_t num_items() const { return item_ids.size(); }
  const ProfileColumn* user_feature(const std::string& n) const { return find(user_features, n); }
  const ProfileColumn* item_feature(const std::string& n) const { return find(item_features, n); }

 private:
  static const ProfileColumn* find(const std::vector<ProfileColumn>& cols, const std::string& n) {
    for (const auto& c : cols)
      if (c.name == n) return &c;
    return nullptr;
  }
};

}  // namespace rechub
