// rechub::cuda's Var-level ops (rechub/cuda/ops.hpp) and the device hooks they fill
// (rechub/cuda/hooks.hpp): the tape plumbing of a device step, against the CPU ops.
//
// The "host" suite needs no GPU (hook registration, loud failures for host tensors) and always
// runs. The GPU cases run a small two-tower step end to end on both devices: embedding_bag with
// empty histories, gather_rows, linear_act, layer_norm, l2_normalize, in-batch softmax + BCE,
// backward through cuda::loss_to_host, then three Adam steps (dense and lazy rows), comparing
// the loss, every gradient and every parameter. Without a GPU, main() runs the host suite and
// then prints "SKIPPED: ..." (exit 0 when the host suite passed).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "compare.hpp"
#include "gradcheck.hpp"
#include "rechub/cuda/hooks.hpp"
#include "rechub/cuda/ops.hpp"
#include "rechub/loss/bce.hpp"
#include "rechub/loss/inbatch.hpp"
#include "rechub/loss/softmax_ce.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/ops/topk.hpp"

using namespace rechub;
using testing::close;

namespace {
Tensor rnd(const Shape& s, Rng& rng, float lo = -1.0f, float hi = 1.0f) { return testing::random_tensor(s, rng, lo, hi); }
Tensor rand_ints(const Shape& s, Rng& rng, std::int32_t lo, std::int32_t hi) {
  Tensor t = Tensor::empty(s, DType::i32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.i32()[i] = lo + static_cast<std::int32_t>(rng.below(hi - lo));
  return t;
}
template <class... F>
int count_null(F... f) {
  return (0 + ... + (f == nullptr ? 1 : 0));
}
}  // namespace

TEST_SUITE("host") {
  TEST_CASE("hooks: rechub::cuda registers a device path for every op it covers") {
    const detail::CudaHooks& h = detail::cuda_hooks();
    const int missing = count_null(h.add, h.sub, h.mul, h.div, h.scale, h.view, h.relu, h.sigmoid, h.tanh, h.prelu,
                                   h.linear, h.linear_act, h.sum, h.mean, h.sum_dim, h.mean_dim, h.masked_mean,
                                   h.softmax, h.log_softmax, h.layer_norm, h.batch_norm1d_act, h.l2_normalize,
                                   h.gather_rows, h.embedding_bag, h.bce_with_logits, h.bce, h.bpr,
                                   h.softmax_cross_entropy, h.listwise_softmax_ce, h.inbatch_softmax, h.topk);
    CHECK(missing == 0);
    auto none = static_cast<Var (*)(const Var&)>(nullptr);
    CHECK_THROWS_WITH_AS(detail::cuda_hook("row_dot", none), "no CUDA path for op row_dot", CudaError);
  }

  TEST_CASE("host tensors are rejected loudly, before any device work") {
    Var x = constant(Tensor::zeros({2, 3}));
    CHECK_THROWS_WITH_AS(cuda::relu(x), "cuda::relu: input [2, 3] is on the host (move it with cuda::to_device)",
                         CudaError);
    CHECK_THROWS_WITH_AS(cuda::linear(x, x), "cuda::linear_act: input [2, 3] is on the host (move it with cuda::to_device)",
                         CudaError);
    CHECK_THROWS_WITH_AS(cuda::loss_to_host(x),
                         "cuda::loss_to_host: input [2, 3] is on the host (move it with cuda::to_device)", CudaError);
    end_step();
  }
}

// ---- GPU -----------------------------------------------------------------------------------------

namespace {
/// The tiny two-tower model of the GPU cases, as plain parameters.
struct Tower {
  static constexpr std::int64_t V = 30, D = 8, H = 16;
  Parameter user_table, item_table, w1, b1, w2, b2, gamma, beta;
  explicit Tower(Rng& rng)
      : user_table(rnd({V, D}, rng)),
        item_table(rnd({V, D}, rng)),
        w1(rnd({H, D}, rng, -0.5f, 0.5f)),
        b1(rnd({H}, rng, -0.1f, 0.1f)),
        w2(rnd({D, H}, rng, -0.5f, 0.5f)),
        b2(rnd({D}, rng, -0.1f, 0.1f)),
        gamma(rnd({D}, rng, 0.8f, 1.2f)),
        beta(rnd({D}, rng, -0.1f, 0.1f)) {}
  std::vector<Parameter*> params() { return {&user_table, &item_table, &w1, &b1, &w2, &b2, &gamma, &beta}; }
  void copy_values_from(Tower& o) {
    auto a = params(), b = o.params();
    for (std::size_t i = 0; i < a.size(); ++i) a[i]->value().copy_from(b[i]->value());
  }
};
struct Batch {
  Tensor history, items, log_q, labels;  // host tensors: the device step copies ids and labels over
};
Batch make_batch(Rng& rng, std::int64_t B, std::int64_t L) {
  Batch b{rand_ints({B, L}, rng, 0, static_cast<std::int32_t>(Tower::V)), rand_ints({B}, rng, 1, 8),
          rnd({B}, rng, -6.0f, -2.0f), Tensor::empty({B})};
  for (std::int64_t l = 0; l < L; ++l) b.history.i32()[l] = 0;  // an empty history (all padding)
  for (std::int64_t i = 0; i < B; ++i) b.labels.f32()[i] = static_cast<float>(i % 2);
  return b;
}
/// loss = inbatch_softmax(u, v) + 0.5 bce_with_logits(<u, v>, labels), written once for both
/// devices: `Ops` is a tag selecting rechub:: or rechub::cuda:: functions.
struct CpuOps {};
struct GpuOps {};
template <class Ops>
Var tower_loss(Tower& t, const Batch& b) {
  constexpr bool gpu = std::is_same_v<Ops, GpuOps>;
  auto bag = [&](const Var& T, const Tensor& ids) {
    if constexpr (gpu) return cuda::embedding_bag(T, ids, BagMode::mean, 0);
    else return embedding_bag(T, ids, BagMode::mean, 0);
  };
  auto gather = [&](const Var& T, const Tensor& ids) {
    if constexpr (gpu) return cuda::gather_rows(T, ids);
    else return gather_rows(T, ids);
  };
  auto lin = [&](const Var& x, const Var& w, const Var& bias, ActKind k) {
    if constexpr (gpu) return cuda::linear_act(x, w, bias, k);
    else return linear_act(x, w, bias, k);
  };
  auto ln = [&](const Var& x) {
    if constexpr (gpu) return cuda::layer_norm(x, t.gamma, t.beta, 1e-5f);
    else return layer_norm(x, t.gamma, t.beta, 1e-5f);
  };
  auto l2 = [&](const Var& x) {
    if constexpr (gpu) return cuda::l2_normalize(x);
    else return l2_normalize(x);
  };
  Var u = l2(ln(lin(lin(bag(t.user_table, b.history), t.w1, t.b1, ActKind::relu), t.w2, t.b2, ActKind::none)));
  Var v = l2(gather(t.item_table, b.items));
  if constexpr (gpu) {
    Var s = cuda::sum(cuda::mul(u, v), 1);
    return cuda::add(cuda::inbatch_softmax(u, v, 0.2f, b.log_q, b.items),
                     cuda::scale(cuda::bce_with_logits(s, b.labels), 0.5f));
  } else {
    Var s = sum(mul(u, v), 1);
    return add(inbatch_softmax(u, v, 0.2f, b.log_q.f32(), b.items.i32()), scale(bce_with_logits(s, b.labels), 0.5f));
  }
}
}  // namespace

TEST_CASE("two-tower step on the device: loss, every gradient, three Adam steps (dense and lazy)") {
  for (bool lazy : {false, true}) {
    CAPTURE(lazy);
    Rng rng(31);
    Tower cpu(rng), gpu(rng);
    gpu.copy_values_from(cpu);
    if (lazy)
      for (Tower* t : {&cpu, &gpu}) {
        t->user_table.track_rows(true);
        t->item_table.track_rows(true);
      }
    for (Parameter* p : gpu.params()) cuda::to_device(*p);
    AdamOptions opt;
    opt.lr = 1e-2;
    opt.weight_decay = 1e-3;
    Adam adam_cpu(cpu.params(), opt), adam_gpu(gpu.params(), opt);
    for (int step = 0; step < 3; ++step) {
      const Batch b = make_batch(rng, 12, 6);
      // One backward per step: Tape::backward re-runs every earlier node that holds a gradient.
      Var lc = tower_loss<CpuOps>(cpu, b);
      const float loss_cpu = lc.item();
      backward(lc);
      end_step();
      Var lg = cuda::loss_to_host(tower_loss<GpuOps>(gpu, b));
      const float loss_gpu = lg.item();
      backward(lg);
      CHECK(loss_gpu == doctest::Approx(loss_cpu).epsilon(1e-5));
      const auto pc = cpu.params(), pg = gpu.params();
      for (std::size_t i = 0; i < pc.size(); ++i)
        CHECK(close("step " + std::to_string(step) + " grad " + std::to_string(i), pg[i]->grad(), pc[i]->grad(), 1e-5,
                    1e-4));
      end_step();
      adam_cpu.step();
      cuda::adam_step(adam_gpu);
      adam_cpu.zero_grad();
      cuda::zero_grad(adam_gpu);
    }
    const auto pc = cpu.params(), pg = gpu.params();
    for (std::size_t i = 0; i < pc.size(); ++i)
      CHECK(close("param " + std::to_string(i) + " after 3 steps", pg[i]->value(), pc[i]->value(), 1e-5, 1e-4));
  }
}

TEST_CASE("Var-level ops: softmax with host and device masks, reshape, sums, losses, through the tape") {
  Rng rng(32);
  const Tensor X = rnd({4, 3, 7}, rng, -3.0f, 3.0f), R = rnd({4, 3, 7}, rng);
  Tensor mask = rand_ints({4, 1, 7}, rng, 0, 2);
  for (std::int64_t l = 0; l < 7; ++l) mask.i32()[l] = 0;  // a fully masked row
  // CPU: d(sum(R * log_softmax(x, mask)))/dx; GPU the same through loss_to_host.
  Parameter pc(X.clone()), pg(X.clone());
  cuda::to_device(pg);
  {
    Var y = log_softmax(pc, mask);
    const Tensor yc = y.value().clone();
    backward(sum(mul(y, constant(R))));
    end_step();  // one backward per step (see above)
    for (bool device_mask : {false, true}) {
      Var yg = cuda::log_softmax(pg, device_mask ? cuda::to_device(mask) : mask);
      CHECK(close("log_softmax y", yg.value(), yc, 1e-6, 1e-5));
      cuda::zero(pg.grad());
      backward(cuda::loss_to_host(cuda::sum(cuda::mul(yg, constant(cuda::to_device(R))))));
      CHECK(close("log_softmax dx", pg.grad(), pc.grad(), 1e-5, 1e-4));
      end_step();
    }
  }
  {  // reshape + sum over a dim + mean + bpr + listwise CE
    pc.zero_grad();
    cuda::zero(pg.grad());
    auto run_cpu = [&] {
      Var s = reshape(pc, Shape{12, 7});
      return add(add(mean(sum(s, 1)), bpr(reshape(sum(s, 1), Shape{12}), reshape(s, Shape{12, 7}))),
                 listwise_softmax_ce(s, 0.5f));
    };
    auto run_gpu = [&] {
      Var s = cuda::reshape(pg, Shape{12, 7});
      return cuda::add(cuda::add(cuda::mean(cuda::sum(s, 1)),
                                 cuda::bpr(cuda::reshape(cuda::sum(s, 1), Shape{12}), cuda::reshape(s, Shape{12, 7}))),
                       cuda::listwise_softmax_ce(s, 0.5f));
    };
    Var lc = run_cpu();
    const float loss_cpu = lc.item();
    backward(lc);
    end_step();
    Var lg = cuda::loss_to_host(run_gpu());
    CHECK(lg.item() == doctest::Approx(loss_cpu).epsilon(1e-5));
    backward(lg);
    CHECK(close("chain dx", pg.grad(), pc.grad(), 1e-5, 1e-4));
    end_step();
  }
}

TEST_CASE("hooks: dispatching through the table runs the device op") {
  Rng rng(33);
  const Tensor X = rnd({5, 9}, rng, -2.0f, 2.0f);
  NoGrad ng;
  const Var xd = constant(cuda::to_device(X));
  CHECK(close("relu via hook", detail::cuda_hooks().relu(xd).value(), relu(constant(X)).value().clone(), 0, 0));
  const TopK r = detail::cuda_hooks().topk(cuda::to_device(X), 4);
  const TopK ref = topk(X, 4);
  CHECK(testing::same_bits("topk via hook", r.indices, ref.indices));
  end_step();
}

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  if (!cuda::available()) {
    ctx.addFilter("test-suite", "host");
    const int rc = ctx.run();
    if (rc == 0) std::printf("test_cuda_ops: host checks passed; GPU cases SKIPPED: %s\n", cuda::describe().c_str());
    return rc;
  }
  std::printf("test_cuda_ops: running on %s\n", cuda::describe().c_str());
  return ctx.run();
}
