// Attention: the fused multi-head attention op, the packed in-projection, sequence embeddings,
// MultiheadAttention against torch numbers, LayerNorm module.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/nn/attention.hpp"
#include "rechub/nn/layer_norm.hpp"
#include "rechub/ops/attention.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
template <class F>
Tensor fill(const Shape& s, F f) {
  Tensor t = Tensor::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(f(double(i)));
  return t;
}
Tensor ints(const Shape& s, std::vector<std::int32_t> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
AttentionOptions opts(int heads, bool causal, Tensor key_mask = Tensor()) {
  AttentionOptions o;
  o.heads = heads;
  o.causal = causal;
  o.key_mask = key_mask;
  return o;
}
bool same(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// torch.nn.MultiheadAttention(6, 2, batch_first=True) in eval mode with the weights and inputs
// of golden_setup() below; computed once with torch 1.13 (float32):
//   in_proj_weight[i] = 0.3 sin(0.7 i + 0.1), in_proj_bias[i] = 0.05 cos(1.3 i),
//   out_proj.weight[i] = 0.25 cos(0.45 i + 0.2), out_proj.bias[i] = 0.1 sin(2.1 i),
//   x[i] = sin(0.31 i) + 0.5 cos(0.17 i), q_in[i] = cos(0.23 i)  (flat indices, x [2, 4, 6]);
//   causal = ~tril(ones(4, 4)), key_padding_mask = [[F, F, F, F], [F, F, F, T]].
const float kSelfCausal[] = {2.60385424e-01f, -1.27906218e-01f, 3.98106128e-02f, -1.36682643e-02f, -1.37539133e-02f, 1.06772952e-01f, 1.47951290e-01f, -2.39721537e-02f, -3.56830470e-02f, 1.89010911e-02f, 2.84966081e-03f, 4.41819504e-02f, -1.60449028e-01f, 2.20855474e-01f, -1.69966400e-01f, 1.68771856e-02f, 1.40792549e-01f, -2.03214794e-01f, -2.10249331e-02f, 1.00339815e-01f, -9.14807990e-02f, -4.52048145e-03f, 1.00996986e-01f, -1.09861024e-01f, 1.75700873e-01f, -5.25224060e-02f, -1.18096620e-02f, 4.28481214e-03f, 5.40459901e-03f, 5.41785136e-02f, 3.98238190e-02f, 5.95605150e-02f, -7.85946995e-02f, 1.29588870e-02f, 5.65056689e-02f, -4.68936637e-02f, 3.51005569e-02f, 5.70380539e-02f, -6.93104565e-02f, -1.30589970e-03f, 7.30142146e-02f, -6.24787137e-02f, 1.20904021e-01f, -9.62188095e-03f, -3.45831402e-02f, 2.56203394e-03f, 3.12931240e-02f, 9.09111649e-03f};
const float kSelfKeyPad[] = {1.03865206e-01f, 2.62450427e-03f, -3.96875590e-02f, -4.54827095e-04f, 4.18524556e-02f, -6.98482990e-03f, 3.06621939e-02f, 6.75656274e-02f, -8.39074552e-02f, 1.45600187e-02f, 5.89233562e-02f, -5.28663211e-02f, -1.37267053e-01f, 1.97520331e-01f, -1.50955051e-01f, 5.83705446e-03f, 1.41743317e-01f, -1.93893820e-01f, -2.10249368e-02f, 1.00339830e-01f, -9.14808139e-02f, -4.52046143e-03f, 1.00996971e-01f, -1.09861016e-01f, 5.54744080e-02f, 4.23183143e-02f, -6.30688965e-02f, 2.12819804e-03f, 6.05633110e-02f, -4.33997847e-02f, 2.66577005e-02f, 6.57472685e-02f, -7.66151175e-02f, 3.19276797e-03f, 7.21846372e-02f, -6.54773861e-02f, 3.51005532e-02f, 5.70380613e-02f, -6.93104640e-02f, -1.30589039e-03f, 7.30142072e-02f, -6.24787100e-02f, 6.23915903e-02f, 3.67261358e-02f, -5.98746128e-02f, 1.94464601e-03f, 5.77009134e-02f, -3.80406007e-02f};
const float kCrossCausalKeyPad[] = {2.60385424e-01f, -1.27906218e-01f, 3.98106128e-02f, -1.36682643e-02f, -1.37539133e-02f, 1.06772952e-01f, 1.51323259e-01f, -2.70717815e-02f, -3.34504619e-02f, 1.79638769e-02f, 2.31168419e-03f, 4.60918918e-02f, -1.07754886e-01f, 1.78883463e-01f, -1.46769062e-01f, 1.69050694e-02f, 1.17544785e-01f, -1.61207378e-01f, 9.86610632e-03f, 7.69422725e-02f, -8.00657049e-02f, -1.76307315e-03f, 8.45961049e-02f, -8.29632655e-02f, 1.75700873e-01f, -5.25224060e-02f, -1.18096620e-02f, 4.28481214e-03f, 5.40459901e-03f, 5.41785136e-02f, 5.66995665e-02f, 4.57500927e-02f, -7.04992041e-02f, 1.21314870e-02f, 4.99062277e-02f, -3.41335274e-02f, 1.47243654e-02f, 7.48553574e-02f, -8.11505169e-02f, 2.28534173e-03f, 7.83607960e-02f, -7.57373497e-02f, 2.23904289e-02f, 6.71921447e-02f, -7.49603957e-02f, -1.24409015e-03f, 7.85523951e-02f, -7.25543499e-02f};

void golden_setup(MultiheadAttention& m) {
  m.in_proj_weight.value().copy_from(fill({18, 6}, [](double i) { return 0.3 * std::sin(0.7 * i + 0.1); }));
  m.in_proj_bias.value().copy_from(fill({18}, [](double i) { return 0.05 * std::cos(1.3 * i); }));
  m.out_proj.weight.value().copy_from(fill({6, 6}, [](double i) { return 0.25 * std::cos(0.45 * i + 0.2); }));
  m.out_proj.bias.value().copy_from(fill({6}, [](double i) { return 0.1 * std::sin(2.1 * i); }));
  m.eval();
}
void check_close(const Var& y, const float* want, double tol = 2e-6) {
  for (std::int64_t i = 0; i < y.value().numel(); ++i) {
    INFO("element " << i);
    CHECK(std::fabs(y.value().f32()[i] - want[i]) <= tol);
  }
}
}  // namespace

TEST_CASE("MultiheadAttention matches torch.nn.MultiheadAttention (causal, key padding, cross)") {
  MultiheadAttention m(6, 2);
  golden_setup(m);
  Tensor x = fill({2, 4, 6}, [](double i) { return std::sin(0.31 * i) + 0.5 * std::cos(0.17 * i); });
  Tensor qin = fill({2, 4, 6}, [](double i) { return std::cos(0.23 * i); });
  Tensor keep = ints({2, 4}, {1, 1, 1, 1, 1, 1, 1, 0});
  Var vx = constant(x);
  check_close(m.forward(vx, true), kSelfCausal);
  check_close(m.forward(vx, false, keep), kSelfKeyPad);
  check_close(m.forward(constant(qin), vx, vx, true, keep), kCrossCausalKeyPad);
  // Three distinct Vars take the unpacked path (three projections): same numbers.
  Var vx2 = constant(x), vx3 = constant(x);
  check_close(m.forward(vx, vx2, vx3, true), kSelfCausal);
  end_step();
  // Names and shapes of torch's state_dict.
  auto names = m.named_parameters();
  REQUIRE(names.size() == 4);
  CHECK(names[0].first == "in_proj_weight");
  CHECK(names[0].second->shape() == Shape{18, 6});
  CHECK(names[1].first == "in_proj_bias");
  CHECK(names[2].first == "out_proj.weight");
  CHECK(names[3].first == "out_proj.bias");
  MultiheadAttention fresh(8, 2);
  for (std::int64_t i = 0; i < 24; ++i) CHECK(fresh.in_proj_bias.value().f32()[i] == 0.0f);
  const float bound = std::sqrt(6.0f / 32.0f);
  for (std::int64_t i = 0; i < 24 * 8; ++i) CHECK(std::fabs(fresh.in_proj_weight.value().f32()[i]) <= bound);
  CHECK_THROWS_WITH_AS(MultiheadAttention(6, 4), "MultiheadAttention: embed_dim 6 must be a positive multiple of num_heads 4",
                       ConfigError);
}

TEST_CASE("attention: gradients (heads, packed columns, causal, key mask, dropout)") {
  Rng rng(3);
  // Separate q, k, v; two heads; causal + key mask (one row fully masked at the start).
  Tensor km = ints({2, 5}, {0, 0, 1, 1, 1, 1, 1, 1, 0, 1});
  check_gradients(
      [&](const std::vector<Var>& v) { return attention(v[0], v[1], v[2], opts(2, true, km)); },
      {random_tensor({2, 5, 4}, rng), random_tensor({2, 5, 4}, rng), random_tensor({2, 5, 4}, rng)});
  // Non-causal cross attention, Lq != Lk, one head.
  check_gradients([&](const std::vector<Var>& v) { return attention(v[0], v[1], v[2], opts(1, false)); },
                  {random_tensor({2, 3, 4}, rng), random_tensor({2, 6, 4}, rng), random_tensor({2, 6, 4}, rng)});
  // Packed [B, L, 3D] input used for q, k and v at column offsets (one buffer, three readers).
  check_gradients(
      [&](const std::vector<Var>& v) {
        AttentionOptions o = opts(2, true);
        o.dim = 4;
        o.k_offset = 4;
        o.v_offset = 8;
        return attention(v[0], v[0], v[0], o);
      },
      {random_tensor({2, 5, 12}, rng)});
  // Dropout: a fresh Rng with the same seed per call gives the same mask, so the function is smooth.
  check_gradients(
      [&](const std::vector<Var>& v) {
        Rng drop(11);
        AttentionOptions o = opts(2, true, km);
        o.dropout = 0.3f;
        o.training = true;
        o.rng = &drop;
        return attention(v[0], v[1], v[1], AttentionOptions(o));
      },
      {random_tensor({2, 5, 4}, rng), random_tensor({2, 5, 4}, rng)});
}

TEST_CASE("attention: longer than a row block, against a composed reference") {
  // L = 150 spans three row blocks of 64: the causal column limits per block must be right.
  Rng rng(5);
  const std::int64_t B = 2, L = 150, D = 8;
  Tensor q = random_tensor({B, L, D}, rng), k = random_tensor({B, L, D}, rng), v = random_tensor({B, L, D}, rng);
  Var y = attention(constant(q), constant(k), constant(v), opts(2, true));
  // Direct evaluation per (b, h, i) in double.
  double max_err = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t i = 0; i < L; ++i) {
        std::vector<double> s(static_cast<std::size_t>(i + 1));
        double m = -1e300;
        for (std::int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (std::int64_t c = 0; c < 4; ++c) d += double(q.f32()[(b * L + i) * D + h * 4 + c]) * k.f32()[(b * L + j) * D + h * 4 + c];
          s[static_cast<std::size_t>(j)] = d / 2.0;
          m = std::max(m, d / 2.0);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - m));
        for (std::int64_t c = 0; c < 4; ++c) {
          double o = 0;
          for (std::int64_t j = 0; j <= i; ++j) o += s[static_cast<std::size_t>(j)] / z * v.f32()[(b * L + j) * D + h * 4 + c];
          max_err = std::max(max_err, std::fabs(o - y.value().f32()[(b * L + i) * D + h * 4 + c]));
        }
      }
  CHECK(max_err < 2e-6);
  end_step();
  check_gradients([&](const std::vector<Var>& x) { return attention(x[0], x[1], x[2], opts(1, true)); },
                  {random_tensor({1, 70, 2}, rng), random_tensor({1, 70, 2}, rng), random_tensor({1, 70, 2}, rng)},
                  {1e-2, 3e-3, 3e-2, 7});
}

TEST_CASE("attention: causal outputs ignore later positions; hidden keys get zero weight") {
  Rng rng(9);
  const std::int64_t B = 2, L = 6, D = 4;
  Tensor q = random_tensor({B, L, D}, rng), k = random_tensor({B, L, D}, rng), v = random_tensor({B, L, D}, rng);
  Tensor y0 = attention(constant(q), constant(k), constant(v), opts(2, true)).value().clone();
  // Change everything at positions >= 4: outputs at positions < 4 stay bit-identical.
  Tensor q2 = q.clone(), k2 = k.clone(), v2 = v.clone();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 4; t < L; ++t)
      for (std::int64_t c = 0; c < D; ++c) {
        q2.f32()[(b * L + t) * D + c] += 3.0f;
        k2.f32()[(b * L + t) * D + c] -= 2.0f;
        v2.f32()[(b * L + t) * D + c] *= -5.0f;
      }
  Tensor y1 = attention(constant(q2), constant(k2), constant(v2), opts(2, true)).value().clone();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < L; ++t)
      for (std::int64_t c = 0; c < D; ++c) {
        const std::int64_t i = (b * L + t) * D + c;
        if (t < 4) CHECK(y0.f32()[i] == y1.f32()[i]);
        else CHECK(y0.f32()[i] != y1.f32()[i]);
      }
  // Key mask: keys 0, 1 of row 0 and key 5 of row 1 hidden; changing their keys and values
  // changes nothing (they have weight exactly 0). Row 0's queries 0 and 1 see no key: output 0.
  Tensor km = ints({2, 6}, {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0});
  Tensor z0 = attention(constant(q), constant(k), constant(v), opts(2, true, km)).value().clone();
  Tensor k3 = k.clone(), v3 = v.clone();
  for (std::int64_t c = 0; c < D; ++c) {
    for (std::int64_t t : {0, 1}) {
      k3.f32()[t * D + c] = 100.0f;
      v3.f32()[t * D + c] = -100.0f;
    }
    k3.f32()[(L + 5) * D + c] = 50.0f;
    v3.f32()[(L + 5) * D + c] = 7.0f;
  }
  Tensor z1 = attention(constant(q), constant(k3), constant(v3), opts(2, true, km)).value().clone();
  for (std::int64_t i = 0; i < z0.numel(); ++i) CHECK(z0.f32()[i] == z1.f32()[i]);  // == : 0 and -0 are equal
  for (std::int64_t i = 0; i < 2 * D; ++i) CHECK(z0.f32()[i] == 0.0f);
  // Not causal, masked: a query's output is a convex combination of the visible values only.
  Tensor ones = Tensor::full({B, L, D}, 1.0f);
  Tensor w = attention(constant(q), constant(k), constant(ones), opts(1, false, km)).value().clone();
  for (std::int64_t i = 0; i < w.numel(); ++i) CHECK(w.f32()[i] == doctest::Approx(1.0).epsilon(1e-6));
  end_step();
}

TEST_CASE("attention: dropout keeps 1 - p of the weights, deterministic per seed, off in eval") {
  Rng rng(4);
  const std::int64_t B = 8, L = 40, D = 4;
  Tensor q = random_tensor({B, L, D}, rng), k = random_tensor({B, L, D}, rng);
  Tensor ones = Tensor::full({B, L, D}, 1.0f);
  auto run = [&](float p, bool training, std::uint64_t seed) {
    Rng r(seed);
    AttentionOptions o = opts(1, false);
    o.dropout = p;
    o.training = training;
    o.rng = &r;
    return attention(constant(q), constant(k), constant(ones), o).value().clone();
  };
  // With v = 1 every output is sum_j Pd_ij = (kept weight) / (1 - p): mean 1 over many rows.
  Tensor a = run(0.4f, true, 1), b = run(0.4f, true, 1), c = run(0.4f, true, 2), e = run(0.4f, false, 1);
  CHECK(same(a, b));
  CHECK(!same(a, c));
  double mean = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) mean += a.f32()[i] / double(a.numel());
  CHECK(mean == doctest::Approx(1.0).epsilon(0.05));
  for (std::int64_t i = 0; i < e.numel(); ++i) CHECK(e.f32()[i] == doctest::Approx(1.0).epsilon(1e-6));
  end_step();
}

TEST_CASE("attention: same result on 1 and 2 threads; shape errors") {
  Rng rng(8);
  Tensor q = random_tensor({16, 50, 8}, rng), k = random_tensor({16, 50, 8}, rng), v = random_tensor({16, 50, 8}, rng);
  const int saved = num_threads();
  auto run = [&](int threads) {
    set_num_threads(threads);
    Parameter pq(q.clone()), pk(k.clone()), pv(v.clone());
    Rng r(3);
    AttentionOptions o = opts(2, true);
    o.dropout = 0.2f;
    o.training = true;
    o.rng = &r;
    Var y = attention(pq, pk, pv, o);
    Tensor out = y.value().clone();
    tape().backward(y, Tensor::full(y.shape(), 0.5f));
    end_step();
    return std::vector<Tensor>{out, pq.grad().clone(), pk.grad().clone(), pv.grad().clone()};
  };
  auto one = run(1), two = run(2);
  set_num_threads(saved);
  for (std::size_t i = 0; i < one.size(); ++i) CHECK(same(one[i], two[i]));

  Var a = constant(Tensor::zeros({2, 3, 4})), b = constant(Tensor::zeros({2, 5, 4}));
  CHECK_THROWS_WITH_AS(attention(a, b, b, opts(1, true)), "attention: a causal mask needs as many queries as keys, got 3 and 5",
                       ShapeError);
  CHECK_THROWS_WITH_AS(attention(a, b, b, opts(3, false)), "attention: width 4 is not a multiple of 3 heads", ShapeError);
  CHECK_THROWS_WITH_AS(attention(a, b, b, opts(1, false, ints({2, 4}, {1, 1, 1, 1, 1, 1, 1, 1}))),
                       "attention: key_mask [2, 4] does not match [2, 5]", ShapeError);
  end_step();
}

namespace {
/// Rows of a padded [B, L, W] tensor at the packed positions -> [N, W].
Tensor gather_packed(const Tensor& x, const PackedRows& rows) {
  const std::int64_t W = x.dim(2);
  Tensor out = Tensor::empty({rows.N, W});
  for (std::int64_t i = 0; i < rows.N; ++i) std::memcpy(out.f32() + i * W, x.f32() + rows.index[i] * W, W * 4);
  return out;
}
}  // namespace

TEST_CASE("pack_rows and attention_packed: the padded computation without its padding") {
  // Pre-padded, post-padded, padded in the middle, empty and full rows.
  const Tensor ids = ints({5, 5}, {0, 0, 3, 1, 2, 4, 4, 0, 0, 0, 0, 5, 0, 6, 7, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5});
  // PackedRows live in the step arena: packed again after every end_step().
  PackedRows rows = pack_rows(ids);
  REQUIRE(rows.N == 13);
  CHECK(std::vector<std::int64_t>(rows.begin, rows.begin + 6) == std::vector<std::int64_t>{0, 3, 5, 8, 8, 13});
  CHECK(std::vector<std::int32_t>(rows.index, rows.index + 5) == std::vector<std::int32_t>{2, 3, 4, 5, 6});
  CHECK(std::vector<std::int32_t>(rows.pad_before, rows.pad_before + 8) ==
        std::vector<std::int32_t>{2, 2, 2, 0, 0, 1, 2, 2});
  CHECK(std::vector<std::int32_t>(rows.pad_total, rows.pad_total + 8) == std::vector<std::int32_t>{2, 2, 2, 3, 3, 2, 2, 2});
  Rng rng(17);
  const std::int64_t B = 5, L = 5, D = 4;
  Tensor q = random_tensor({B, L, D}, rng), k = random_tensor({B, L, D}, rng), v = random_tensor({B, L, D}, rng);
  Tensor bias = random_tensor({3 * D}, rng);  // pad key = bias[D, 2D), pad value = bias[2D, 3D)
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    rows = pack_rows(ids);
    // Hidden padded keys: the padded attention with a key mask, at the valid positions.
    Tensor ref = attention(constant(q), constant(k), constant(v), opts(2, causal, ids)).value().clone();
    Var y = attention_packed(constant(gather_packed(q, rows)), constant(gather_packed(k, rows)),
                             constant(gather_packed(v, rows)), rows, opts(2, causal));
    Tensor want = gather_packed(ref, rows);
    for (std::int64_t i = 0; i < want.numel(); ++i) CHECK(y.value().f32()[i] == doctest::Approx(want.f32()[i]).epsilon(1e-5));
    // Visible padded keys (Torch-RecHub): padded positions' keys / values are the bias columns.
    Tensor kp = k.clone(), vp = v.clone();
    for (std::int64_t r = 0; r < B * L; ++r)
      if (ids.i32()[r] == 0)
        for (std::int64_t c = 0; c < D; ++c) {
          kp.f32()[r * D + c] = bias.f32()[D + c];
          vp.f32()[r * D + c] = bias.f32()[2 * D + c];
        }
    Tensor ref2 = attention(constant(q), constant(kp), constant(vp), opts(2, causal)).value().clone();
    AttentionOptions o = opts(2, causal);
    o.attend_padding = true;
    o.pad_kv = constant(bias);
    o.pad_k_offset = D;
    o.pad_v_offset = 2 * D;
    Var y2 = attention_packed(constant(gather_packed(q, rows)), constant(gather_packed(k, rows)),
                              constant(gather_packed(v, rows)), rows, o);
    Tensor want2 = gather_packed(ref2, rows);
    for (std::int64_t i = 0; i < want2.numel(); ++i)
      CHECK(y2.value().f32()[i] == doctest::Approx(want2.f32()[i]).epsilon(1e-5));
    end_step();
  }
  // Gradients, padded keys included (their key and value come from a packed bias vector).
  for (bool drop : {false, true})
    check_gradients(
        [&](const std::vector<Var>& x) {
          Rng r(5);
          AttentionOptions o = opts(2, true);
          o.attend_padding = true;
          o.pad_kv = x[3];
          o.pad_k_offset = 1;
          o.pad_v_offset = 5;
          o.dropout = drop ? 0.3f : 0.0f;
          o.training = drop;
          o.rng = &r;
          return attention_packed(x[0], x[1], x[2], pack_rows(ids), o);
        },
        {random_tensor({13, 4}, rng), random_tensor({13, 4}, rng), random_tensor({13, 4}, rng),
         random_tensor({9}, rng)});
  // Zero padded keys (no bias): they still take softmax weight.
  check_gradients(
      [&](const std::vector<Var>& x) {
        AttentionOptions o = opts(1, false);
        o.attend_padding = true;
        return attention_packed(x[0], x[1], x[1], pack_rows(ids), o);
      },
      {random_tensor({13, 4}, rng), random_tensor({13, 4}, rng)});
  CHECK_THROWS_WITH_AS(attention_packed(constant(Tensor::zeros({3, 4})), constant(Tensor::zeros({3, 4})),
                                        constant(Tensor::zeros({3, 4})), pack_rows(ids), opts(1, true)),
                       "attention_packed: q [3, 4], k [3, 4], v [3, 4] do not hold the 13 packed rows", ShapeError);
  end_step();
}

TEST_CASE("packed_embedding and unpack_rows: values and gradients") {
  Rng rng(19);
  const Tensor ids = ints({3, 4}, {0, 2, 3, 1, 0, 0, 0, 0, 3, 3, 0, 1});
  const PackedRows rows = pack_rows(ids);
  REQUIRE(rows.N == 6);
  Tensor T = random_tensor({4, 3}, rng), P = random_tensor({4, 3}, rng);
  Tensor padded = sequence_embedding(constant(T), ids, constant(P), 1.5f).value().clone();
  Var e = packed_embedding(constant(T), ids, constant(P), 1.5f, rows);
  Tensor want = gather_packed(padded, rows);
  for (std::int64_t i = 0; i < want.numel(); ++i) CHECK(e.value().f32()[i] == want.f32()[i]);
  Tensor fill = random_tensor({3}, rng);
  Var u = unpack_rows(e, rows, constant(fill));
  for (std::int64_t r = 0; r < 12; ++r)
    for (std::int64_t c = 0; c < 3; ++c)
      CHECK(u.value().f32()[r * 3 + c] == (ids.i32()[r] == 0 ? fill.f32()[c] : padded.f32()[r * 3 + c]));
  end_step();
  check_gradients([&](const std::vector<Var>& x) { return packed_embedding(x[0], ids, x[1], 1.5f, pack_rows(ids)); },
                  {random_tensor({4, 3}, rng), random_tensor({4, 3}, rng)});
  check_gradients([&](const std::vector<Var>& x) { return unpack_rows(x[0], pack_rows(ids), x[1]); },
                  {random_tensor({6, 3}, rng), random_tensor({3}, rng)});
}

TEST_CASE("parallel_dropout: rate, scale, determinism, gradient") {
  Rng rng(2);
  Tensor x = Tensor::full({50, 100}, 1.0f);
  Rng a(1), b(1), c(2);
  Tensor ya = parallel_dropout(constant(x), 0.3f, true, a).value().clone();
  Tensor yb = parallel_dropout(constant(x), 0.3f, true, b).value().clone();
  Tensor yc = parallel_dropout(constant(x), 0.3f, true, c).value().clone();
  CHECK(same(ya, yb));
  CHECK(!same(ya, yc));
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < ya.numel(); ++i) {
    const float v = ya.f32()[i];
    CHECK((v == 0.0f || v == doctest::Approx(1.0 / 0.7)));
    kept += v != 0.0f;
  }
  CHECK(double(kept) / double(ya.numel()) == doctest::Approx(0.7).epsilon(0.03));
  Var off = constant(x);
  CHECK(parallel_dropout(off, 0.3f, false, a).node() == off.node());
  end_step();
  check_gradients(
      [&](const std::vector<Var>& v) {
        Rng r(9);
        return parallel_dropout(v[0], 0.4f, true, r);
      },
      {random_tensor({3, 7}, rng)});
}

TEST_CASE("in_projection, sequence_embedding, mask_positions: values and gradients") {
  Rng rng(12);
  // in_projection = linear with rows [2, 5) of the weight.
  Tensor x = random_tensor({2, 3, 4}, rng), W = random_tensor({6, 4}, rng), bias = random_tensor({6}, rng);
  Var y = in_projection(constant(x), constant(W), constant(bias), 2, 5);
  CHECK(y.shape() == Shape{2, 3, 3});
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t j = 0; j < 3; ++j) {
      double s = bias.f32()[2 + j];
      for (std::int64_t c = 0; c < 4; ++c) s += double(x.f32()[r * 4 + c]) * W.f32()[(2 + j) * 4 + c];
      CHECK(y.value().f32()[r * 3 + j] == doctest::Approx(s).epsilon(1e-5));
    }
  end_step();
  check_gradients([](const std::vector<Var>& v) { return in_projection(v[0], v[1], v[2], 2, 5); },
                  {random_tensor({2, 3, 4}, rng), random_tensor({6, 4}, rng), random_tensor({6}, rng)});

  // sequence_embedding: padding rows are zero, others scale * T[id] + Pos[t].
  Tensor ids = ints({2, 4}, {0, 3, 1, 3, 2, 2, 0, 1});
  Tensor T = random_tensor({4, 3}, rng), P = random_tensor({5, 3}, rng);
  Var e = sequence_embedding(constant(T), ids, constant(P), 2.0f);
  for (std::int64_t r = 0; r < 8; ++r)
    for (std::int64_t j = 0; j < 3; ++j) {
      const std::int32_t id = ids.i32()[r];
      const float want = id == 0 ? 0.0f : 2.0f * T.f32()[id * 3 + j] + P.f32()[(r % 4) * 3 + j];
      CHECK(e.value().f32()[r * 3 + j] == doctest::Approx(want).epsilon(1e-6));
    }
  end_step();
  check_gradients([&](const std::vector<Var>& v) { return sequence_embedding(v[0], ids, v[1], 2.0f); },
                  {random_tensor({4, 3}, rng), random_tensor({5, 3}, rng)});
  CHECK_THROWS_WITH_AS(sequence_embedding(constant(T), ids, constant(Tensor::zeros({3, 3})), 1.0f),
                       "sequence_embedding: position table [3, 3] does not cover ids [2, 4] of width 3", ShapeError);

  check_gradients([&](const std::vector<Var>& v) { return mask_positions(v[0], ids); }, {random_tensor({2, 4, 3}, rng)});
  Var mz = mask_positions(constant(Tensor::full({2, 4, 3}, 1.0f)), ids);
  for (std::int64_t r = 0; r < 8; ++r) CHECK(mz.value().f32()[r * 3] == (ids.i32()[r] == 0 ? 0.0f : 1.0f));
  end_step();
}

TEST_CASE("LayerNorm module: torch names, eps, init") {
  LayerNorm ln(5, 1e-8f);
  auto p = ln.named_parameters();
  REQUIRE(p.size() == 2);
  CHECK(p[0].first == "weight");
  CHECK(p[1].first == "bias");
  CHECK(ln.weight.value().f32()[0] == 1.0f);
  CHECK(ln.bias.value().f32()[4] == 0.0f);
  CHECK(ln.eps() == 1e-8f);
  // A constant row normalises to 0 (not NaN) with eps = 1e-8.
  Var y = ln.forward(constant(Tensor::full({2, 5}, 3.0f)));
  for (std::int64_t i = 0; i < 10; ++i) CHECK(y.value().f32()[i] == 0.0f);
  end_step();
  CHECK_THROWS_WITH_AS(LayerNorm(0), "LayerNorm: dim must be positive, got 0", ConfigError);
}
