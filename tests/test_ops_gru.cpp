// GRU op and module: packing, torch golden values, padding invariance, serving steps, gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/nn/gru.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/ops/shape.hpp"

using namespace rechub;

namespace {
constexpr std::int64_t kI = 3, kH = 4, kL = 5;
const std::vector<std::int32_t> kLens{5, 3, 1};

// The golden test's deterministic values (the same formulas as the torch script that produced
// the expected numbers): parameter p (in named_parameters order), element i: 0.5 sin(0.7 i + 1.3 p + 0.1);
// row b, valid step t, feature i: cos(0.9 (100 b + 3 t + i) + 0.2).
void set_golden_weights(GRU& g) {
  int p = 0;
  for (auto& [name, param] : g.named_parameters()) {
    float* v = param->value().f32();
    for (std::int64_t i = 0; i < param->numel(); ++i) v[i] = float(0.5 * std::sin(0.7 * double(i) + 1.3 * p + 0.1));
    ++p;
  }
}
float golden_input(std::int64_t b, std::int64_t t, std::int64_t i) {
  return float(std::cos(0.9 * double(100 * b + kI * t + i) + 0.2));
}
// A padded [B, L, I] batch of the golden rows: valid steps from `start[b]`, padding filled with 7.
Tensor golden_batch(const std::vector<std::int32_t>& start) {
  const std::int64_t B = static_cast<std::int64_t>(kLens.size());
  Tensor x = Tensor::full({B, kL, kI}, 7.0f);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < kLens[b]; ++t)
      for (std::int64_t i = 0; i < kI; ++i) x.f32()[(b * kL + start[b] + t) * kI + i] = golden_input(b, t, i);
  return x;
}

// torch.nn.GRU(3, 4, num_layers=2, batch_first=True) in float64 on each row's valid steps alone
// (tmp script, torch 1.13): outputs of rows 0, 1, 2 (lengths 5, 3, 1), step by step, H values each.
const float kGoldenBias[] = {
    0.407674329f, 0.282856139f, 0.137256769f, -0.046734691f, 0.535700660f, 0.356794249f, 0.297750728f,
    -0.130738005f, 0.467531692f, 0.440815156f, 0.325763770f, -0.164465290f, 0.513636021f, 0.444831892f,
    0.398084213f, -0.216952774f, 0.489526095f, 0.471631830f, 0.383164699f, -0.229618116f, 0.458213694f,
    0.217937793f, 0.186023312f, -0.093969987f, 0.512073490f, 0.356880126f, 0.281409667f, -0.138383626f,
    0.519349284f, 0.412091047f, 0.356308081f, -0.186346750f, 0.472227895f, 0.194571021f, 0.209009322f,
    -0.118103595f};
// The same with bias=False.
const float kGoldenNoBias[] = {
    0.021651976f, -0.023059343f, 0.021425242f,  -0.018220226f, 0.036376212f,  -0.030082721f, 0.019362668f,
    -0.006573846f, 0.057520337f, -0.031853515f, 0.001510814f,  0.033993885f,  0.079282980f,  -0.050673738f,
    0.011284600f, 0.029168038f,  0.059570771f,  -0.019695435f, -0.017858029f, 0.059986529f,  0.026678024f,
    -0.022017181f, 0.012951324f, -0.003742001f, 0.027990317f,  -0.002462568f, -0.020185263f, 0.046270587f,
    0.066377520f, -0.046315238f, 0.015476222f,  0.012402104f,  -0.011855905f, 0.023847350f,  -0.031239150f,
    0.036335704f};

// Ids [B, L] for the given starts (ids 1.. at valid steps, 0 elsewhere).
Tensor ids_for(const std::vector<std::int32_t>& start) {
  const std::int64_t B = static_cast<std::int64_t>(kLens.size());
  Tensor ids = Tensor::zeros({B, kL}, DType::i32);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < kLens[b]; ++t) ids.i32()[b * kL + start[b] + t] = static_cast<std::int32_t>(1 + t);
  return ids;
}
}  // namespace

TEST_CASE("seq_pack sorts rows by length and lays steps out time-major") {
  const std::int32_t start[] = {0, 2, 0, 1}, len[] = {2, 3, 0, 3};
  SeqPack p = seq_pack(4, 5, start, len);
  CHECK(p.T == 8);
  CHECK(p.steps == 3);
  CHECK(std::vector<std::int32_t>(p.order, p.order + 4) == std::vector<std::int32_t>{1, 3, 0, 2});  // stable
  CHECK(std::vector<std::int32_t>(p.slot, p.slot + 4) == std::vector<std::int32_t>{2, 0, 3, 1});
  CHECK(std::vector<std::int64_t>(p.offset, p.offset + 4) == std::vector<std::int64_t>{0, 3, 6, 8});
  CHECK(p.packed(0, 1) == 3 + 2);
  // ids: pre-padded, post-padded, padded on both sides, empty.
  const std::int32_t raw[] = {0, 0, 4, 5, 6, 7, 8, 0, 0, 0, 0, 3, 0, 2, 0, 0, 0, 0, 0, 0};
  Tensor ids = Tensor::from_vector({4, 5}, raw);
  SeqPack q = seq_pack_ids(ids);
  CHECK(std::vector<std::int32_t>(q.start, q.start + 4) == std::vector<std::int32_t>{2, 0, 1, 0});
  CHECK(std::vector<std::int32_t>(q.length, q.length + 4) == std::vector<std::int32_t>{3, 2, 3, 0});
  SeqPack f = seq_pack_full(2, 3);
  CHECK(f.T == 6);
  const std::int32_t bad_start[] = {3}, bad_len[] = {3};
  CHECK_THROWS_WITH_AS(seq_pack(1, 5, bad_start, bad_len), "seq_pack: row 0 spans [3, 6) outside the 5 positions of the batch",
                       DataError);
  end_step();
}

TEST_CASE("GRU matches torch.nn.GRU (2 layers, with and without bias) for pre- and post-padded rows") {
  for (bool bias : {true, false}) {
    CAPTURE(bias);
    GRU g(kI, kH, 2, bias);
    set_golden_weights(g);
    const float* golden = bias ? kGoldenBias : kGoldenNoBias;
    const std::vector<std::vector<std::int32_t>> starts{{0, 0, 0}, {0, 2, 4}, {0, 1, 2}};  // post, pre, both sides
    for (const auto& start : starts) {
      NoGrad ng;
      SeqPack p = seq_pack_ids(ids_for(start));
      GRU::Output o = g.forward(constant(golden_batch(start)), p);
      REQUIRE(o.states.shape() == Shape{3, kL, kH});
      REQUIRE(o.last.shape() == Shape{3, kH});
      const float* s = o.states.value().f32();
      std::int64_t k = 0;
      for (std::int64_t b = 0; b < 3; ++b) {
        for (std::int64_t l = 0; l < kL; ++l) {
          const bool valid = l >= start[b] && l < start[b] + kLens[b];
          for (std::int64_t j = 0; j < kH; ++j) {
            const float v = s[(b * kL + l) * kH + j];
            if (valid) CHECK(std::fabs(v - golden[k++]) <= 1e-5f);
            else CHECK(v == 0.0f);  // padding: no state
          }
        }
        for (std::int64_t j = 0; j < kH; ++j)
          CHECK(o.last.value().f32()[b * kH + j] == s[(b * kL + start[b] + kLens[b] - 1) * kH + j]);
      }
      end_step();
    }
  }
}

TEST_CASE("GRU::step item by item reaches forward()'s last state") {
  Rng rng(5);
  GRU g(kI, kH, 2, true, rng);
  Tensor x = testing::random_tensor({2, kL, kI}, rng);
  const std::int32_t raw[] = {0, 0, 3, 4, 5, 1, 2, 3, 4, 5};  // pre-padded (3 steps), full
  Tensor ids = Tensor::from_vector({2, kL}, raw);
  Tensor last;
  {
    NoGrad ng;
    last = g.forward(constant(x), seq_pack_ids(ids), false).last.value().clone();
  }
  end_step();
  // Row 1 alone, one item at a time; row 0 joins (zero state) at its first real item.
  Tensor state = g.initial_state(1), state0 = g.initial_state(1);
  for (std::int64_t l = 0; l < kL; ++l) {
    g.step(state, x.select(1).reshape({kL, kI}).slice(l, l + 1));
    if (l >= 2) g.step(state0, x.select(0).reshape({kL, kI}).slice(l, l + 1));
  }
  for (std::int64_t j = 0; j < kH; ++j) {
    CHECK(state.f32()[kH + j] == doctest::Approx(last.f32()[kH + j]).epsilon(1e-5));  // layer 1 = top
    CHECK(state0.f32()[kH + j] == doctest::Approx(last.f32()[j]).epsilon(1e-5));
  }
  CHECK_THROWS_WITH_AS(g.step(state, Tensor::zeros({2, kI})), "GRU::step: state [2, 1, 4] must be [2, 2, 4] for 2 input rows",
                       ShapeError);
}

TEST_CASE("gru gradients: one layer with biases, ragged rows including an empty one") {
  Rng rng(11);
  const std::int32_t start[] = {0, 1, 0, 2}, len[] = {4, 3, 0, 1};
  auto f = [&](const std::vector<Var>& v) {
    SeqPack p = seq_pack(4, 4, start, len);
    return gru_packed(pack_sequence(v[0], p), p, v[1], v[2], v[3], v[4]);
  };
  testing::check_gradients(f, {testing::random_tensor({4, 4, kI}, rng), testing::random_tensor({3 * kH, kI}, rng),
                               testing::random_tensor({3 * kH, kH}, rng), testing::random_tensor({3 * kH}, rng),
                               testing::random_tensor({3 * kH}, rng)});
  end_step();
}

TEST_CASE("gru gradients: two layers without bias through unpack and last, pre- and post-padding") {
  Rng rng(12);
  for (bool pre : {true, false}) {
    CAPTURE(pre);
    const std::int32_t len[] = {5, 2, 3};
    const std::int32_t start[] = {0, pre ? 3 : 0, pre ? 2 : 0};
    auto f = [&](const std::vector<Var>& v) {
      SeqPack p = seq_pack(3, 5, start, len);
      Var h1 = gru_packed(pack_sequence(v[0], p), p, v[1], v[2]);
      Var h2 = gru_packed(h1, p, v[3], v[4]);
      // Both outputs feed the objective: every state through unpack, the last ones once more.
      Var all = reshape(unpack_sequence(h2, p), Shape{3, 5 * kH});
      return concat({all, packed_last(h2, p)}, 1);
    };
    testing::check_gradients(f, {testing::random_tensor({3, 5, kI}, rng), testing::random_tensor({3 * kH, kI}, rng),
                                 testing::random_tensor({3 * kH, kH}, rng), testing::random_tensor({3 * kH, kH}, rng),
                                 testing::random_tensor({3 * kH, kH}, rng)});
  }
  end_step();
}

TEST_CASE("padding does not leak: pre, post and extra padding give the same last state, and padding gets no gradient") {
  Rng rng(3);
  GRU g(kI, kH, 2, true, rng);
  const std::int64_t n = 4;
  Tensor seq = testing::random_tensor({n, kI}, rng);
  auto run = [&](std::int64_t L, std::int64_t start, Tensor* grad) {
    Tensor x = Tensor::full({1, L, kI}, 3.0f);  // padding values that would show if they leaked
    Tensor ids = Tensor::zeros({1, L}, DType::i32);
    for (std::int64_t t = 0; t < n; ++t) {
      for (std::int64_t i = 0; i < kI; ++i) x.f32()[(start + t) * kI + i] = seq.f32()[t * kI + i];
      ids.i32()[start + t] = 9;
    }
    Parameter px(x);
    GRU::Output o = g.forward(px.var(), seq_pack_ids(ids), false);
    Tensor last = o.last.value().clone();
    backward(sum(o.last));
    if (grad) *grad = px.grad().clone();
    end_step();
    g.zero_grad();
    return last;
  };
  Tensor gpre;
  Tensor a = run(n + 3, 3, &gpre), b = run(n + 2, 0, nullptr), c = run(n + 6, 2, nullptr), d = run(n, 0, nullptr);
  for (std::int64_t j = 0; j < kH; ++j) {
    CHECK(a.f32()[j] == doctest::Approx(d.f32()[j]).epsilon(1e-6));
    CHECK(b.f32()[j] == doctest::Approx(d.f32()[j]).epsilon(1e-6));
    CHECK(c.f32()[j] == doctest::Approx(d.f32()[j]).epsilon(1e-6));
  }
  for (std::int64_t i = 0; i < 3 * kI; ++i) CHECK(gpre.f32()[i] == 0.0f);
}

TEST_CASE("gru checks its shapes") {
  Rng rng(1);
  const std::int32_t start[] = {0, 0}, len[] = {2, 1};
  SeqPack p = seq_pack(2, 2, start, len);
  Var x = constant(testing::random_tensor({3, kI}, rng));
  Var wi = constant(testing::random_tensor({3 * kH, kI}, rng)), wh = constant(testing::random_tensor({3 * kH, kH}, rng));
  CHECK_THROWS_WITH_AS(gru_packed(x, p, wi, constant(testing::random_tensor({kH, kH}, rng))),
                       "gru: weight_hh [4, 4] must be [3H, H]", ShapeError);
  CHECK_THROWS_WITH_AS(gru_packed(x, p, constant(testing::random_tensor({3 * kH + 1, kI}, rng)), wh),
                       "gru: weight_ih [13, 3] must be [12, I] for hidden size 4", ShapeError);
  CHECK_THROWS_WITH_AS(gru_packed(constant(testing::random_tensor({2, kI}, rng)), p, wi, wh),
                       "gru: input [2, 3] does not match [3, 3] (packed steps x weight_ih's input size)", ShapeError);
  CHECK_THROWS_WITH_AS(pack_sequence(constant(testing::random_tensor({2, 3, kI}, rng)), p),
                       "pack_sequence: x [2, 3, 3] does not match the pack of [2, 2]", ShapeError);
  CHECK_THROWS_WITH_AS(gru_packed(x, SeqPack{}, wi, wh), "gru: the SeqPack is empty (make one with seq_pack_ids)",
                       ConfigError);
  end_step();
}
