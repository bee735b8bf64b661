// bench_micro: Google Benchmark micro-benchmarks of single ops and of the serving path's pieces.
//
//   gemm             detail::gemm, square n^3                         (GFLOP/s counter)
//   linear_fwd_bwd   linear on the tape + backward, batch x d x d      (GFLOP/s over 3 GEMMs)
//   linear_layer     the same, batch x in -> out: FaceBookDSSM's tower layers
//   embedding_bag    mean pooling, L = 50, V = 4000, forward / fwd+bwd (rows/s counter)
//   bn_prelu         batch_norm1d_act(prelu) forward + backward, training mode (4096 rows; and
//                    FaceBookDSSM's 2048 user rows, 840 distinct item rows at 256 wide)
//   l2_normalize     forward, rows x 64
//   op_overhead      a chain of 16 tiny ops on [1, 64] + end_step: the fixed cost per op
//   user_tower       DSSM user_embedding of one request (default config, synthetic data)
//   exact_search     ExactIndex::search_one top-100, cosine, 64 dims
//   hnsw_search      HnswIndex::search_one top-100, cosine, 64 dims, ef 200
//
// Runs on one OpenMP thread unless --threads=N is given (parsed here, before Google Benchmark's own
// flags). The console table goes to stderr; ONE JSON line with every run goes to stdout.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <rechub/rechub.hpp>

using namespace rechub;

namespace {

Tensor random_tensor(const Shape& s, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Rng rng(seed);
  Tensor t = Tensor::empty(s);
  float* p = t.f32();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}

Tensor random_unit_vectors(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  Rng rng(seed);
  Tensor t = Tensor::empty({n, d});
  float* p = t.f32();
  for (std::int64_t i = 0; i < n * d; ++i) p[i] = rng.normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) detail::normalize_row(p + i * d, p + i * d, d);
  return t;
}

void BM_gemm(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor A = random_tensor({n, n}, 1), B = random_tensor({n, n}, 2), C = Tensor::zeros({n, n});
  for (auto _ : st) {
    detail::gemm(false, false, n, n, n, 1.0f, A.f32(), n, B.f32(), n, 0.0f, C.f32(), n);
    benchmark::DoNotOptimize(C.f32());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(n) * double(n) * double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gemm)->Arg(64)->Arg(128)->Arg(256)->Arg(512)->Unit(benchmark::kMicrosecond);

/// linear(x [batch, in], W [out, in], b) on the tape + backward, the input gradient included.
void run_linear(benchmark::State& st, std::int64_t batch, std::int64_t in, std::int64_t out) {
  Parameter x(random_tensor({batch, in}, 3)), w(random_tensor({out, in}, 4, -0.1f, 0.1f)), b(random_tensor({out}, 5));
  Tensor seed = random_tensor({batch, out}, 6);
  for (auto _ : st) {
    Var y = linear(x, w, b);
    tape().backward(y, seed);
    end_step();
    st.PauseTiming();
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    st.ResumeTiming();
  }
  st.counters["GFLOP/s"] = benchmark::Counter(6.0 * double(batch) * double(in) * double(out) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_linear_fwd_bwd(benchmark::State& st) { run_linear(st, st.range(0), st.range(1), st.range(1)); }
BENCHMARK(BM_linear_fwd_bwd)->Args({256, 64})->Args({256, 256})->Args({4096, 64})->Args({4096, 256})
    ->Unit(benchmark::kMicrosecond);

// A tower's layers as they train: batch x in -> out, the input gradient included (an inner layer).
// The shapes are FaceBookDSSM's on Torch-RecHub's ML-100K samples: the user tower at batch 2048
// (its first layer's history part is 16 wide) and an item tower over ~840 distinct items.
void BM_linear_layer(benchmark::State& st) { run_linear(st, st.range(0), st.range(1), st.range(2)); }
BENCHMARK(BM_linear_layer)->ArgNames({"rows", "in", "out"})
    ->Args({2048, 16, 256})->Args({2048, 256, 128})->Args({2048, 128, 64})->Args({2048, 64, 32})
    ->Args({840, 32, 256})->Args({840, 256, 128})->Args({840, 128, 64})->Args({840, 64, 32})
    ->Unit(benchmark::kMicrosecond);

void BM_embedding_bag(benchmark::State& st) {
  const std::int64_t D = st.range(0), backward = st.range(1), V = 4000, L = 50, B = 1024;
  Parameter table(random_tensor({V, D}, 7));
  Tensor ids = Tensor::empty({B, L}, DType::i32);
  Rng rng(8);
  for (std::int64_t i = 0; i < B * L; ++i) ids.i32()[i] = static_cast<std::int32_t>(1 + rng.below(V - 1));
  Tensor seed = random_tensor({B, D}, 9);
  for (auto _ : st) {
    if (backward) {
      Var y = embedding_bag(table, ids, BagMode::mean);
      tape().backward(y, seed);
    } else {
      NoGrad ng;
      benchmark::DoNotOptimize(embedding_bag(table, ids, BagMode::mean).value().f32());
    }
    end_step();
    if (backward) {
      st.PauseTiming();
      table.zero_grad();
      st.ResumeTiming();
    }
  }
  st.counters["rows/s"] = benchmark::Counter(double(B * L), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_embedding_bag)->ArgNames({"D", "bwd"})->Args({16, 0})->Args({64, 0})->Args({16, 1})->Args({64, 1})
    ->Unit(benchmark::kMicrosecond);

void BM_bn_prelu_fwd_bwd(benchmark::State& st) {
  const std::int64_t N = st.range(0), C = st.range(1);
  Parameter x(random_tensor({N, C}, 10)), gamma(Tensor::full({C}, 1.0f)), beta(Tensor::zeros({C})),
      slope(Tensor::full({1}, 0.25f));
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f), seed = random_tensor({N, C}, 11);
  for (auto _ : st) {
    Var y = batch_norm1d_act(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f, ActKind::prelu, slope);
    tape().backward(y, seed);
    end_step();
  }
}
BENCHMARK(BM_bn_prelu_fwd_bwd)->Args({4096, 256})->Args({4096, 64})->Args({2048, 256})->Args({840, 256})->Unit(benchmark::kMicrosecond);

void BM_l2_normalize(benchmark::State& st) {
  const std::int64_t rows = st.range(0);
  Tensor x = random_tensor({rows, 64}, 12);
  for (auto _ : st) {
    NoGrad ng;
    benchmark::DoNotOptimize(l2_normalize(constant(x)).value().f32());
    end_step();
  }
}
BENCHMARK(BM_l2_normalize)->Arg(1)->Arg(4096)->Unit(benchmark::kMicrosecond);

void BM_op_overhead(benchmark::State& st) {
  // 16 elementwise ops on one 64-wide row: what a single-row request pays per op, beyond the math.
  Tensor x = random_tensor({1, 64}, 13);
  for (auto _ : st) {
    NoGrad ng;
    Var h = constant(x);
    for (int i = 0; i < 16; ++i) h = scale(h, 0.5f);
    benchmark::DoNotOptimize(h.value().f32());
    end_step();
  }
  st.counters["ns/op"] = benchmark::Counter(16, benchmark::Counter::kIsIterationInvariantRate |
                                                    benchmark::Counter::kInvert);
}
BENCHMARK(BM_op_overhead)->Unit(benchmark::kNanosecond);

/// A default DSSM on a small synthetic data set and a few one-user requests.
struct TowerFixture {
  Interactions data;
  Recipe recipe = make_recipe("dssm", "rechub");
  std::unique_ptr<MatchModel> model;
  std::vector<Dataset> requests;
  TowerFixture() {
    SyntheticOptions o;
    o.num_users = 300;
    o.num_items = 3706;
    o.min_interactions = 40;
    o.max_interactions = 80;
    data = generate_synthetic(o);
    model = make_model("dssm", recipe_model_config(recipe, FeatureSchema::from(data)));
    for (std::int32_t u = 1; u <= 64; ++u) requests.push_back(user_request(data, u, recipe.samples));
  }
  static TowerFixture& get() {
    static TowerFixture f;
    return f;
  }
};

void BM_user_tower(benchmark::State& st) {
  TowerFixture& f = TowerFixture::get();
  std::size_t i = 0;
  for (auto _ : st) {
    Tensor u = f.model->user_embedding(f.requests[i++ % f.requests.size()]);
    benchmark::DoNotOptimize(u.f32());
  }
}
BENCHMARK(BM_user_tower)->Unit(benchmark::kMicrosecond);

void BM_exact_search(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor items = random_unit_vectors(n, 64, 14), queries = random_unit_vectors(64, 64, 15);
  ExactIndex index(items, Metric::cosine);
  ExactIndex::Scratch scratch(index, 100);
  std::vector<float> scores(100);
  std::vector<std::int64_t> labels(100);
  std::int64_t q = 0;
  for (auto _ : st) {
    index.search_one(queries.f32() + (q++ % 64) * 64, 100, scores.data(), labels.data(), scratch);
    benchmark::DoNotOptimize(labels.data());
  }
}
BENCHMARK(BM_exact_search)->Arg(3706)->Arg(100000)->Unit(benchmark::kMicrosecond);

void BM_hnsw_search(benchmark::State& st) {
  const std::int64_t n = st.range(0);
  Tensor items = random_unit_vectors(n, 64, 16), queries = random_unit_vectors(64, 64, 17);
  HnswOptions ho;
  ho.metric = Metric::cosine;
  ho.build_threads = 0;
  HnswIndex index(items, ho);
  index.set_ef(200);
  std::vector<float> scores(100);
  std::vector<std::int64_t> labels(100);
  std::int64_t q = 0;
  for (auto _ : st) {
    index.search_one(queries.f32() + (q++ % 64) * 64, 100, scores.data(), labels.data());
    benchmark::DoNotOptimize(labels.data());
  }
}
BENCHMARK(BM_hnsw_search)->Arg(3706)->Arg(100000)->Unit(benchmark::kMicrosecond);

/// Console table to stderr, every run kept for the final JSON line.
class JsonLineReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      nlohmann::json j = {{"name", r.benchmark_name()},
                          {"real_time", r.GetAdjustedRealTime()},
                          {"cpu_time", r.GetAdjustedCPUTime()},
                          {"time_unit", benchmark::GetTimeUnitString(r.time_unit)},
                          {"iterations", r.iterations}};
      if (r.run_type == Run::RT_Aggregate) j["aggregate"] = r.aggregate_name;
      for (const auto& [k, c] : r.counters) j[k] = c.value;
      runs_.push_back(j);
    }
  }
  const nlohmann::json& runs() const { return runs_; }

 private:
  nlohmann::json runs_ = nlohmann::json::array();
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
    else args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  set_num_threads(threads > 0 ? threads : 1);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  JsonLineReporter reporter;
  reporter.SetOutputStream(&std::cerr);
  reporter.SetErrorStream(&std::cerr);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  nlohmann::json out = {{"bench", "micro"}, {"threads", num_threads()}, {"runs", reporter.runs()}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
