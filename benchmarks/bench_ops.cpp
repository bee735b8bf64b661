// bench_ops: throughput of the CPU kernels a training step is made of.
//
//   (a) the machine's GEMM ceiling: a square float GEMM (default 1024^3) through detail::gemm,
//       on 1 thread and on --threads threads;
//   (b) linear forward + backward on the tape (x requires grad: 3 GEMMs, fwd, dX, dW) at batch
//       256 and 4096, square layers of 64, 128, 256;
//   (c) embedding_bag, mean pooling, L = 50 ids per row, V = 4000, D = 16 and 64: ns per looked-up
//       row, forward (no tape) and forward + backward (scatter-add into the table gradient);
//   (d) one step of the DSSM tower MLP [96 -> 256 -> 128 -> 64] with BatchNorm + PReLU, forward
//       + backward at batch 4096.
// Each figure: warm-up runs, then --reps timed runs, median reported. Human-readable lines go to
// stderr, ONE JSON line with every figure to stdout. Asserts nothing.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <rechub/autograd/tape.hpp>
#include <rechub/core/parallel.hpp>
#include <rechub/core/rng.hpp>
#include <rechub/nn/mlp.hpp>
#include <rechub/ops/gemm.hpp>
#include <rechub/ops/index.hpp>
#include <rechub/ops/matmul.hpp>

using namespace rechub;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

/// Median seconds of `reps` timed calls of body() after `warmup` untimed ones. `after` runs after
/// each call, outside the timer (end_step, zero_grad).
template <class Body, class After>
double time_median(int warmup, int reps, Body&& body, After&& after) {
  for (int i = 0; i < warmup; ++i) {
    body();
    after();
  }
  std::vector<double> t;
  t.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    body();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    after();
  }
  return median(t);
}
template <class Body>
double time_median(int warmup, int reps, Body&& body) {
  return time_median(warmup, reps, body, [] {});
}

Tensor random_tensor(const Shape& s, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(s);
  float* p = t.f32();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  if (f >> a >> b >> c) return a + " " + b + " " + c;
  return "";
}

// (a) GEMM ceiling.
json bench_gemm(std::int64_t n, int threads, int reps) {
  Rng rng(1);
  Tensor A = random_tensor({n, n}, rng), B = random_tensor({n, n}, rng), C = Tensor::zeros({n, n});
  const double flops = 2.0 * double(n) * double(n) * double(n);
  json out;
  for (int t : {1, threads}) {
    if (t == threads && threads == 1 && out.contains("gflops_1thread")) {
      out["gflops_all_threads"] = out["gflops_1thread"];
      break;
    }
    set_num_threads(t);
    const double s = time_median(1, std::max(3, reps / 4), [&] {
      detail::gemm(false, false, n, n, n, 1.0f, A.f32(), n, B.f32(), n, 0.0f, C.f32(), n);
    });
    const double gf = flops / s * 1e-9;
    std::fprintf(stderr, "gemm %lld^3          %2d thread%s  %8.2f ms  %7.1f GFLOP/s\n", static_cast<long long>(n), t,
                 t == 1 ? " " : "s", s * 1e3, gf);
    out[t == 1 ? "gflops_1thread" : "gflops_all_threads"] = gf;
  }
  out["n"] = n;
  set_num_threads(threads);
  return out;
}

// (b) linear forward + backward.
json bench_linear(int reps) {
  json out = json::array();
  Rng rng(2);
  for (std::int64_t batch : {256, 4096}) {
    for (std::int64_t d : {64, 128, 256}) {
      Parameter x(random_tensor({batch, d}, rng));
      Parameter w(random_tensor({d, d}, rng, -0.1f, 0.1f));
      Parameter b(random_tensor({d}, rng, -0.1f, 0.1f));
      Tensor seed = random_tensor({batch, d}, rng);
      const double s = time_median(
          3, reps,
          [&] {
            Var y = linear(x, w, b);
            tape().backward(y, seed);
          },
          [&] {
            end_step();
            x.zero_grad();
            w.zero_grad();
            b.zero_grad();
          });
      const double flops = 3.0 * 2.0 * double(batch) * double(d) * double(d);
      const double gf = flops / s * 1e-9;
      std::fprintf(stderr, "linear fwd+bwd  B=%-5lld %3lld x %-3lld  %8.3f ms  %7.1f GFLOP/s\n",
                   static_cast<long long>(batch), static_cast<long long>(d), static_cast<long long>(d), s * 1e3, gf);
      out.push_back({{"batch", batch}, {"in", d}, {"out", d}, {"ms", s * 1e3}, {"gflops", gf}});
    }
  }
  return out;
}

// (c) embedding bag, mean pooling.
json bench_embedding_bag(int reps) {
  json out = json::array();
  const std::int64_t V = 4000, L = 50, B = 1024;
  Rng rng(3);
  Tensor ids = Tensor::empty({B, L}, DType::i32);
  for (std::int64_t i = 0; i < B * L; ++i) ids.i32()[i] = static_cast<std::int32_t>(1 + rng.below(V - 1));
  for (std::int64_t D : {16, 64}) {
    Parameter table(random_tensor({V, D}, rng));
    const double rows = double(B * L);
    const double fwd = time_median(3, reps, [&] {
      NoGrad ng;
      embedding_bag(table, ids, BagMode::mean);
    }, [] { end_step(); });
    Tensor seed = random_tensor({B, D}, rng);
    const double fb = time_median(
        3, reps,
        [&] {
          Var y = embedding_bag(table, ids, BagMode::mean);
          tape().backward(y, seed);
        },
        [&] {
          end_step();
          table.zero_grad();
        });
    std::fprintf(stderr, "embedding_bag mean L=%lld D=%-3lld V=%lld B=%lld  fwd %6.2f ns/row  fwd+bwd %6.2f ns/row\n",
                 static_cast<long long>(L), static_cast<long long>(D), static_cast<long long>(V),
                 static_cast<long long>(B), fwd / rows * 1e9, fb / rows * 1e9);
    out.push_back({{"L", L}, {"D", D}, {"V", V}, {"batch", B}, {"fwd_ns_per_row", fwd / rows * 1e9},
                   {"fwd_bwd_ns_per_row", fb / rows * 1e9}});
  }
  return out;
}

// (d) DSSM tower MLP step.
json bench_mlp(int reps) {
  const std::int64_t batch = 4096, in = 96;
  Rng rng(4);
  MLP::Options o;
  o.dims = {256, 128, 64};
  o.activation = "prelu";
  o.batchnorm = true;
  o.output_layer = false;
  MLP mlp(in, o);
  mlp.train();
  Parameter x(random_tensor({batch, in}, rng));
  Tensor seed = random_tensor({batch, 64}, rng);
  const double s = time_median(
      3, reps,
      [&] {
        Var y = mlp.forward(x);
        tape().backward(y, seed);
      },
      [&] {
        end_step();
        mlp.zero_grad();
        x.zero_grad();
      });
  // Linear GEMMs only (3 per layer: fwd, dX, dW); BN, PReLU and bias are extra.
  const double flops = 3.0 * 2.0 * double(batch) * double(in * 256 + 256 * 128 + 128 * 64);
  std::fprintf(stderr, "mlp [96-256-128-64] bn+prelu fwd+bwd B=%lld  %8.3f ms  (%.0f rows/s, %.1f GFLOP/s in GEMMs)\n",
               static_cast<long long>(batch), s * 1e3, double(batch) / s, flops / s * 1e-9);
  return {{"dims", {96, 256, 128, 64}}, {"batch", batch}, {"ms", s * 1e3}, {"rows_per_s", double(batch) / s},
          {"gemm_gflops", flops / s * 1e-9}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_ops: GEMM ceiling, linear, embedding_bag and DSSM-tower MLP throughput"};
  int threads = 0, reps = 20;
  std::int64_t gemm_n = 1024;
  app.add_option("--threads", threads, "OpenMP threads for the threaded figures (0 = all cores)")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions per figure (median reported)")->capture_default_str();
  app.add_option("--gemm-n", gemm_n, "size of the square GEMM for the ceiling")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads <= 0) {
#ifdef _OPENMP
    threads = omp_get_num_procs();
#else
    threads = 1;
#endif
  }
  reps = std::max(reps, 1);
  set_num_threads(threads);
  std::fprintf(stderr, "bench_ops: %d threads, %d reps, load average %s\n", threads, reps, load_average().c_str());

  json result;
  result["bench"] = "ops";
  result["threads"] = threads;
  result["reps"] = reps;
  result["hardware_concurrency"] = std::thread::hardware_concurrency();
  result["load_average_start"] = load_average();
  result["gemm"] = bench_gemm(gemm_n, threads, reps);
  result["linear_fwd_bwd"] = bench_linear(reps);
  result["embedding_bag_mean"] = bench_embedding_bag(reps);
  result["mlp_dssm_tower"] = bench_mlp(reps);
  result["load_average_end"] = load_average();
  std::printf("%s\n", result.dump().c_str());
  return 0;
}
