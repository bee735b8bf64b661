#pragma once
// MatchTrainer: Torch-RecHub's trainer for recall models, with its knobs (mode 0/1/2,
// temperature, Adam lr / weight_decay, epochs) plus in-batch negatives, early stopping on a
// validation metric that keeps the best weights, lazy Adam for embedding tables, gradient
// clipping, a progress bar (a live bar on a terminal, plain periodic lines otherwise) and a
// per-epoch JSON log.
//
// One step: batch -> match_loss (objective.hpp) -> backward -> clip -> Adam -> end_step().
// Every temporary of a step lives in the step arena, so after the first steps a step makes no
// heap allocation (tests/test_train.cpp counts them).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/data/batch_iterator.hpp"
#include "rechub/eval/metrics.hpp"
#include "rechub/optim/adam.hpp"
#include "rechub/optim/clip.hpp"
#include "rechub/train/objective.hpp"

namespace rechub {

struct TrainerOptions {
  Objective objective;
  double lr = 1e-3;               // Torch-RecHub MatchTrainer's default optimizer_params
  double weight_decay = 1e-5;
  int epochs = 10;
  std::int64_t batch_size = 256;
  std::uint64_t seed = 2022;
  bool lazy_embeddings = false;   // lazy Adam on embedding tables (rows a batch touched only)
  float clip_norm = 0.0f;         // 0 = no clipping
  int patience = 0;               // early stopping: epochs without improvement (0 = off)
  std::string monitor = "NDCG@10";
  std::string log_path;           // per-epoch JSON lines (empty = none)
  int progress = -1;              // -1 auto (bar on a TTY, lines otherwise), 0 off, 1 on
};

inline void to_json(nlohmann::json& j, const TrainerOptions& o) {
  j = {{"objective", o.objective}, {"lr", o.lr}, {"weight_decay", o.weight_decay}, {"epochs", o.epochs},
       {"batch_size", o.batch_size}, {"seed", o.seed}, {"lazy_embeddings", o.lazy_embeddings},
       {"clip_norm", o.clip_norm}, {"patience", o.patience}, {"monitor", o.monitor}};
}
inline void from_json(const nlohmann::json& j, TrainerOptions& o) {
  if (j.contains("objective")) o.objective = j["objective"].get<Objective>();
  o.lr = j.value("lr", o.lr);
  o.weight_decay = j.value("weight_decay", o.weight_decay);
  o.epochs = j.value("epochs", o.epochs);
  o.batch_size = j.value("batch_size", o.batch_size);
  o.seed = j.value("seed", o.seed);
  o.lazy_embeddings = j.value("lazy_embeddings", o.lazy_embeddings);
  o.clip_norm = j.value("clip_norm", o.clip_norm);
  o.patience = j.value("patience", o.patience);
  o.monitor = j.value("monitor", o.monitor);
  RECHUB_CHECK_AS(ConfigError, o.epochs >= 0 && o.batch_size >= 1 && o.lr > 0, "trainer: needs epochs >= 0, ",
                  "batch_size >= 1 and lr > 0, got epochs ", o.epochs, ", batch_size ", o.batch_size, ", lr ", o.lr);
}

struct EpochStats {
  int epoch = 0;
  double loss = 0;                 // mean training loss over the epoch's batches
  double seconds = 0;              // training wall time of the epoch (no validation)
  double samples_per_second = 0;
  std::int64_t samples = 0;
  MetricMap validation;            // empty without a validation function
};

class MatchTrainer {
 public:
  using Validate = std::function<MetricMap()>;

  MatchTrainer(MatchModel& model, TrainerOptions opt) : model_(model), opt_(std::move(opt)), rng_(opt_.seed) {
    AdamOptions a;
    a.lr = opt_.lr;
    a.weight_decay = opt_.weight_decay;
    if (opt_.lazy_embeddings)
      for (auto& [name, p] : model_.named_parameters())
        if (name.rfind("embedding.", 0) == 0) p->track_rows(true);
    adam_ = std::make_unique<Adam>(model_.named_parameters(), a);
    params_ = model_.parameters();
  }

  const TrainerOptions& options() const { return opt_; }
  Adam& optimizer() { return *adam_; }
  const std::vector<EpochStats>& history() const { return history_; }
  /// The epoch fit() starts from (set when resuming from a training checkpoint).
  int start_epoch() const { return start_epoch_; }
  void set_start_epoch(int e) { start_epoch_ = e; }
  int best_epoch() const { return best_epoch_; }

  /// Trains opt.epochs epochs; with `validate` and patience > 0 stops early and restores the best weights.
  const std::vector<EpochStats>& fit(const Dataset& train, const Validate& validate = nullptr) {
    BatchIterator it(train, opt_.batch_size, true, opt_.seed);
    double best = -std::numeric_limits<double>::infinity();
    int since_best = 0;
    std::vector<Tensor> best_weights;
    for (int e = start_epoch_; e < opt_.epochs; ++e) {
      EpochStats s = train_one_epoch(it, e, train.rows());
      start_epoch_ = e + 1;
      if (validate) {
        s.validation = validate();
        auto f = s.validation.find(opt_.monitor);
        RECHUB_CHECK_AS(ConfigError, f != s.validation.end(), "MatchTrainer: monitor '", opt_.monitor,
                        "' is not among the validation metrics");
        if (f->second > best) {
          best = f->second;
          best_epoch_ = e;
          since_best = 0;
          if (opt_.patience > 0) best_weights = snapshot();
        } else {
          ++since_best;
        }
      }
      log_epoch(s);
      history_.push_back(s);
      if (validate && opt_.patience > 0 && since_best >= opt_.patience) break;
    }
    if (!best_weights.empty()) restore(best_weights);
    return history_;
  }

  /// One pass over `it`'s dataset of `total` rows (epoch number `epoch` decides the shuffle).
  EpochStats train_one_epoch(BatchIterator& it, int epoch, std::int64_t total) {
    model_.train();
    it.start_epoch(epoch);
    rng_ = Rng(opt_.seed).fork(static_cast<std::uint64_t>(epoch));  // epoch e draws the same in-batch negatives on resume
    EpochStats s;
    s.epoch = epoch;
    const auto t0 = std::chrono::steady_clock::now();
    auto last_print = t0;
    double loss_sum = 0;
    std::int64_t batches = 0;
    while (const Batch* b = it.next()) {
      const double l = step(*b);
      loss_sum += l;
      ++batches;
      s.samples += b->rows();
      const auto now = std::chrono::steady_clock::now();
      if (show_progress() && std::chrono::duration<double>(now - last_print).count() >= (tty() ? 0.2 : 10.0)) {
        last_print = now;
        print_progress(epoch, s.samples, total, loss_sum / static_cast<double>(batches),
                       std::chrono::duration<double>(now - t0).count(), false);
      }
    }
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.loss = batches ? loss_sum / static_cast<double>(batches) : 0.0;
    s.samples_per_second = s.seconds > 0 ? static_cast<double>(s.samples) / s.seconds : 0.0;
    if (show_progress()) print_progress(epoch, s.samples, total, s.loss, s.seconds, true);
    return s;
  }

  /// One optimisation step on a batch; returns the loss. Throws on a non-finite loss.
  double step(const Batch& batch) {
    Var loss = match_loss(model_, batch, opt_.objective, rng_);
    const double l = loss.item();
    RECHUB_CHECK(std::isfinite(l), "MatchTrainer: loss is ", l, " (not finite) at epoch step; lower the learning "
                 "rate or raise the temperature");
    backward(loss);
    if (opt_.clip_norm > 0) clip_grad_norm(params_, opt_.clip_norm);
    adam_->step();
    adam_->zero_grad();
    end_step();
    return l;
  }

 private:
  bool tty() const { return isatty(STDERR_FILENO) != 0; }
  bool show_progress() const { return opt_.progress == 1 || (opt_.progress == -1); }
  void print_progress(int epoch, std::int64_t done, std::int64_t total, double loss, double secs, bool final) const {
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    if (tty()) {
      const int width = 30, filled = total ? static_cast<int>(width * done / total) : width;
      std::fprintf(stderr, "\repoch %d [%.*s%*s] %3d%% loss %.4f %.0f samples/s%s", epoch + 1, filled,
                   "##############################", width - filled, "",
                   total ? static_cast<int>(100 * done / total) : 100, loss, rate, final ? "\n" : "");
    } else {
      std::fprintf(stderr, "epoch %d: %lld/%lld samples, loss %.4f, %.0f samples/s%s\n", epoch + 1,
                   static_cast<long long>(done), static_cast<long long>(total), loss, rate, final ? " (done)" : "");
    }
    std::fflush(stderr);
  }
  void log_epoch(const EpochStats& s) const {
    if (opt_.log_path.empty()) return;
    nlohmann::json j = {{"epoch", s.epoch + 1}, {"loss", s.loss}, {"seconds", s.seconds},
                        {"samples", s.samples}, {"samples_per_second", s.samples_per_second}};
    for (const auto& [k, v] : s.validation) j["val_" + k] = v;
    std::ofstream f(opt_.log_path, std::ios::app);
    RECHUB_CHECK(f.good(), "MatchTrainer: cannot append to log ", opt_.log_path);
    f << j.dump() << "\n";
  }
  std::vector<Tensor> snapshot() const {
    std::vector<Tensor> w;
    for (auto& [n, p] : model_.named_parameters()) w.push_back(p->value().clone());
    for (auto& [n, b] : model_.named_buffers()) w.push_back(b->clone());
    return w;
  }
  void restore(const std::vector<Tensor>& w) {
    std::size_t i = 0;
    for (auto& [n, p] : model_.named_parameters()) p->value().copy_from(w[i++]);
    for (auto& [n, b] : model_.named_buffers()) b->copy_from(w[i++]);
  }

  MatchModel& model_;
  TrainerOptions opt_;
  Rng rng_;
  std::unique_ptr<Adam> adam_;
  std::vector<Parameter*> params_;
  std::vector<EpochStats> history_;
  int best_epoch_ = -1;
  int start_epoch_ = 0;
};

}  // namespace rechub
