#pragma once
// Dataset: named columns with a common number of rows, like Torch-RecHub's model-input dict
// (x["user_id"], x["hist_movie_id"], x["neg_items"], x["label"]). A column is an owned
// int32 tensor [N] or [N, L] (ids, histories, negatives) or a float32 tensor [N] or [N, D]
// (labels, dense features). A Batch is the same thing for a subset of rows.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/tensor.hpp"

namespace rechub {

class Dataset {
 public:
  Dataset() = default;
  /// Adds (or replaces) a column; every column must have the same number of rows.
  void set(const std::string& name, Tensor column) {
    RECHUB_CHECK_SHAPE(column.ndim() >= 1, "Dataset::set: column '", name, "' must have a row dim, got ",
                       column.shape().str());
    if (!cols_.empty() && find_index(name) < 0)
      RECHUB_CHECK_SHAPE(column.dim(0) == rows_, "Dataset::set: column '", name, "' has ", column.dim(0),
                         " rows, dataset has ", rows_);
    rows_ = column.dim(0);
    int i = find_index(name);
    if (i >= 0) cols_[static_cast<std::size_t>(i)].second = std::move(column);
    else cols_.emplace_back(name, std::move(column));
  }
  bool has(const std::string& name) const { return find_index(name) >= 0; }
  const Tensor& operator[](const std::string& name) const {
    int i = find_index(name);
    RECHUB_CHECK_AS(ConfigError, i >= 0, "Dataset: no column '", name, "' (have: ", names_joined(), ")");
    return cols_[static_cast<std::size_t>(i)].second;
  }
  std::int64_t rows() const { return rows_; }
  const std::vector<std::pair<std::string, Tensor>>& columns() const { return cols_; }
  std::string names_joined() const {
    std::string s;
    for (const auto& c : cols_) s += (s.empty() ? "" : ", ") + c.first;
    return s;
  }

 private:
  int find_index(const std::string& name) const {
    for (std::size_t i = 0; i < cols_.size(); ++i)
      if (cols_[i].first == name) return static_cast<int>(i);
    return -1;
  }
  std::vector<std::pair<std::string, Tensor>> cols_;
  std::int64_t rows_ = 0;
};

/// A batch has the same interface as a dataset; its tensors may be arena-backed.
using Batch = Dataset;

}  // namespace rechub
