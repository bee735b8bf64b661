#pragma once
// Mini-batches over a Dataset, like torch's DataLoader(shuffle=..., drop_last=...).
//
// Every column of the dataset gets one owned buffer of batch_size rows, allocated in the
// constructor; next() gathers the batch's rows into those buffers and hands out a Batch whose
// columns are views of them (the last, short batch is a leading-dim slice). So a steady-state
// epoch allocates nothing on the heap, and a Batch stays valid only until the next call.
//
// Shuffled mode draws a fresh permutation per epoch from (seed, epoch), so epoch e has the
// same order whatever happened before it; sequential mode (evaluation) keeps dataset order.
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/rng.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/data/dataset.hpp"

namespace rechub {

/// Shuffling (per-epoch, seeded) or sequential batches over a Dataset, gathered into reused buffers.
class BatchIterator {
 public:
  /// `data` must outlive the iterator. shuffle=false gives dataset order (evaluation).
  BatchIterator(const Dataset& data, std::int64_t batch_size, bool shuffle = true, std::uint64_t seed = 2022,
                bool drop_last = false)
      : data_(&data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), seed_(seed) {
    RECHUB_CHECK_AS(ConfigError, batch_size >= 1, "BatchIterator: batch_size ", batch_size, " must be >= 1");
    const std::int64_t n = data.rows();
    for (const auto& col : data.columns()) {
      const Tensor& t = col.second;
      RECHUB_CHECK_SHAPE(t.device() == Device::cpu, "BatchIterator: column '", col.first, "' is not on the cpu");
      Shape s = t.shape();
      s[0] = batch_size < n ? batch_size : n;
      buffers_.push_back(Tensor::empty(s, t.dtype()));
      row_bytes_.push_back(t.dim(0) == 0 ? 0 : t.nbytes() / static_cast<std::size_t>(t.dim(0)));
      total_row_bytes_ += static_cast<std::int64_t>(row_bytes_.back());
    }
    order_.resize(static_cast<std::size_t>(n));
    start_epoch(0);
  }

  /// Rewinds to the first batch of `epoch`, reshuffling with (seed, epoch) in shuffled mode.
  void start_epoch(std::int64_t epoch) {
    epoch_ = epoch;
    pos_ = 0;
    for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<std::int64_t>(i);
    if (!shuffle_) return;
    Rng rng = Rng(seed_).fork(static_cast<std::uint64_t>(epoch));
    for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
  }
  /// Starts the next epoch (epoch() + 1).
  void next_epoch() { start_epoch(epoch_ + 1); }

  /// The next batch of this epoch, or nullptr when the epoch is done. Valid until the next call.
  const Batch* next() {
    const std::int64_t n = data_->rows();
    const std::int64_t left = n - pos_;
    if (left <= 0 || (drop_last_ && left < batch_size_)) return nullptr;
    const std::int64_t b = left < batch_size_ ? left : batch_size_;
    const std::int64_t* rows = order_.data() + pos_;
    const auto& cols = data_->columns();
    // Rows sit at random places in the dataset (a cache miss each): one parallel region copies
    // every column, threads splitting the rows, and each row is prefetched a few rows ahead.
    parallel_for(b, total_row_bytes_ + 64 * static_cast<std::int64_t>(cols.size()),
                 [&](std::int64_t r0, std::int64_t r1) {
                   for (std::size_t c = 0; c < cols.size(); ++c)
                     gather_rows(static_cast<const char*>(cols[c].second.raw()),
                                 static_cast<char*>(buffers_[c].raw()), row_bytes_[c], rows, r0, r1);
                 });
    for (std::size_t c = 0; c < cols.size(); ++c)
      batch_.set(cols[c].first, b == buffers_[c].dim(0) ? buffers_[c] : buffers_[c].slice(0, b));
    batch_rows_ = rows;
    current_ = b;
    pos_ += b;
    return &batch_;
  }

  /// Dataset row index of each row of the last batch next() returned.
  const std::int64_t* batch_rows() const { return batch_rows_; }
  /// Rows in the last batch next() returned.
  std::int64_t current_size() const { return current_; }
  /// Batches per epoch.
  std::int64_t num_batches() const {
    const std::int64_t n = data_->rows();
    return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  }
  std::int64_t epoch() const { return epoch_; }
  std::int64_t batch_size() const { return batch_size_; }

 private:
  /// dst row r = src row rows[r] for r in [r0, r1), rows of w bytes. Ids and labels (4 or 8
  /// bytes) copy as one load and store, not a memcpy call each.
  static void gather_rows(const char* src, char* dst, std::size_t w, const std::int64_t* rows, std::int64_t r0,
                          std::int64_t r1) {
    constexpr std::int64_t kAhead = 8;
    auto copy = [&](auto word) {
      using W = decltype(word);
      for (std::int64_t r = r0; r < r1; ++r) {
        if (r + kAhead < r1) __builtin_prefetch(src + rows[r + kAhead] * static_cast<std::int64_t>(w));
        W v;
        std::memcpy(&v, src + rows[r] * static_cast<std::int64_t>(w), sizeof(W));
        std::memcpy(dst + r * static_cast<std::int64_t>(w), &v, sizeof(W));
      }
    };
    if (w == 4) return copy(std::uint32_t());
    if (w == 8) return copy(std::uint64_t());
    for (std::int64_t r = r0; r < r1; ++r) {
      if (r + kAhead < r1) {
        const char* ahead = src + rows[r + kAhead] * static_cast<std::int64_t>(w);
        for (std::size_t line = 0; line < w; line += 64) __builtin_prefetch(ahead + line);
      }
      std::memcpy(dst + r * static_cast<std::int64_t>(w), src + rows[r] * static_cast<std::int64_t>(w), w);
    }
  }

  const Dataset* data_;
  std::int64_t batch_size_;
  bool shuffle_, drop_last_;
  std::uint64_t seed_;
  std::vector<Tensor> buffers_;
  std::vector<std::size_t> row_bytes_;
  std::int64_t total_row_bytes_ = 0;
  std::vector<std::int64_t> order_;
  Batch batch_;
  std::int64_t epoch_ = 0, pos_ = 0, current_ = 0;
  const std::int64_t* batch_rows_ = nullptr;
};

}  // namespace rechub
