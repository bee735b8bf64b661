// Core: tensors, views, arena, RNG, tape basics, matmul/linear gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/ops/gemm.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/reduce.hpp"
#include "rechub/ops/score.hpp"

using namespace rechub;

TEST_CASE("tensor views share storage and check shapes") {
  Tensor t = Tensor::zeros({4, 3});
  Tensor r = t.reshape({2, 6});
  r.f32()[7] = 5.0f;
  CHECK(t.f32()[7] == 5.0f);
  Tensor s = t.slice(2, 4);
  CHECK(s.shape() == Shape{2, 3});
  CHECK(s.f32()[1] == 5.0f);
  Tensor row = t.select(2);
  CHECK(row.shape() == Shape{3});
  CHECK(row.f32()[1] == 5.0f);
  CHECK(t.rows() == 4);
  CHECK(t.cols() == 3);
  CHECK_THROWS_WITH_AS(t.reshape({5, 2}), "reshape: cannot view [4, 3] as [5, 2]", ShapeError);
  CHECK_THROWS_WITH_AS(t.slice(3, 5), "slice: [3, 5) out of range for [4, 3]", ShapeError);
  CHECK_THROWS_WITH_AS(t.i32(), "Tensor::i32: tensor [4, 3] is float32", ShapeError);
  Tensor c = t.clone();
  c.f32()[7] = 1.0f;
  CHECK(t.f32()[7] == 5.0f);
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), ShapeError);
}

TEST_CASE("arena settles into one block and stops allocating") {
  Arena a(1024);
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 10; ++i) a.tensor({100, 10});
    a.reset();
  }
  CHECK(a.blocks() == 1);
  const auto hw = a.high_water();
  for (int i = 0; i < 10; ++i) a.tensor({100, 10});
  CHECK(a.blocks() == 1);
  CHECK(a.high_water() == hw);
  void* p = a.allocate(3);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % Arena::kAlign == 0);
}

TEST_CASE("rng is deterministic per seed and forks independent streams") {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    auto x = a.next_u64();
    CHECK(x == b.next_u64());
  }
  CHECK(Rng(42).next_u64() != c.next_u64());
  Rng f1 = a.fork(1), f1b = a.fork(1), f2 = a.fork(2);
  CHECK(f1.next_u64() == f1b.next_u64());
  CHECK(a.fork(1).next_u64() != f2.next_u64());
  double mean = 0, sq = 0;
  Rng n(1);
  for (int i = 0; i < 20000; ++i) {
    double v = n.normal();
    mean += v;
    sq += v * v;
  }
  mean /= 20000;
  CHECK(std::fabs(mean) < 0.03);
  CHECK(std::fabs(sq / 20000 - 1.0) < 0.05);
  for (int i = 0; i < 1000; ++i) CHECK(n.below(7) < 7);
}

TEST_CASE("NoGrad records nothing and parameters accumulate gradients") {
  Rng rng(1);
  Parameter w(testing::random_tensor({3, 4}, rng));
  Tensor xin = testing::random_tensor({2, 4}, rng);
  {
    NoGrad ng;
    Var y = linear(constant(xin), w);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(static_cast<bool>(y.node()->backward));
  }
  end_step();
  // The same weight used twice gets the sum of both uses.
  Var x = constant(xin);
  Var y1 = linear(x, w), y2 = linear(x, w);
  Tensor seed = Tensor::full({2, 3}, 1.0f);
  tape().backward(y1, seed);
  Tensor g1 = w.grad().clone();
  end_step();
  w.zero_grad();
  Var z = matmul(linear(constant(xin), w), linear(constant(xin), w), false, true);  // both uses in one graph
  (void)z;
  end_step();
  (void)y2;
  CHECK(g1.f32()[0] != 0.0f);
}

TEST_CASE("matmul gradients, every transpose combination and batched") {
  Rng rng(3);
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Shape sa = ta ? Shape{4, 3} : Shape{3, 4};
      Shape sb = tb ? Shape{5, 4} : Shape{4, 5};
      testing::check_gradients([&](const std::vector<Var>& v) { return matmul(v[0], v[1], ta, tb); },
                               {testing::random_tensor(sa, rng), testing::random_tensor(sb, rng)});
    }
  testing::check_gradients([&](const std::vector<Var>& v) { return matmul(v[0], v[1], false, true); },
                           {testing::random_tensor({2, 3, 4}, rng), testing::random_tensor({2, 5, 4}, rng)});
  CHECK_THROWS_WITH_AS(matmul(constant(Tensor::zeros({2, 3})), constant(Tensor::zeros({4, 5}))),
                       "matmul: inner dims differ: [2, 3] x [4, 5]", ShapeError);
  end_step();
}

TEST_CASE("linear gradients with and without bias, 3-d input") {
  Rng rng(4);
  testing::check_gradients([](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
                           {testing::random_tensor({2, 3, 4}, rng), testing::random_tensor({5, 4}, rng),
                            testing::random_tensor({5}, rng)});
  testing::check_gradients([](const std::vector<Var>& v) { return linear(v[0], v[1]); },
                           {testing::random_tensor({3, 4}, rng), testing::random_tensor({2, 4}, rng)});
  CHECK_THROWS_WITH_AS(linear(constant(Tensor::zeros({2, 3})), constant(Tensor::zeros({5, 4}))),
                       "linear: input [2, 3] does not match weight [5, 4] (expects last dim 4)", ShapeError);
  end_step();
}

TEST_CASE("large linear matches a naive product (threaded GEMM path)") {
  Rng rng(5);
  Tensor x = testing::random_tensor({300, 64}, rng), w = testing::random_tensor({128, 64}, rng);
  Var y = linear(constant(x), constant(w));
  double maxerr = 0;
  for (int i = 0; i < 300; i += 7)
    for (int j = 0; j < 128; j += 5) {
      double ref = 0;
      for (int k = 0; k < 64; ++k) ref += double(x.f32()[i * 64 + k]) * w.f32()[j * 64 + k];
      maxerr = std::max(maxerr, std::fabs(ref - y.value().f32()[i * 128 + j]));
    }
  CHECK(maxerr < 1e-4);
  end_step();
}

// The row-tiled products (linear forward and input gradient) and the transposed-A ones (its weight
// gradient): the AVX2 kernels where compiled in, Eigen's kernel (in tiles) elsewhere. Each must give the right product for every transpose, beta,
// bias, rows past the last full 6-row block and tile, an 8-column last panel, and a depth of
// several of Eigen's K blocks; the Eigen tiles must also equal Eigen's own driver bit for bit.
TEST_CASE("tiled GEMM paths equal a double reference; Eigen's tiles equal Eigen's driver bit for bit") {
  Rng rng(17);
  struct Shape3 {
    std::int64_t M, N, K;
  };
  for (Shape3 s : {Shape3{1003, 128, 96}, Shape3{517, 256, 512}, Shape3{601, 40, 37}, Shape3{131, 24, 300},
                   Shape3{134, 32, 1000}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        CAPTURE(ta);
        CAPTURE(tb);
        Tensor a = testing::random_tensor({s.M * s.K}, rng), b = testing::random_tensor({s.K * s.N}, rng);
        Tensor c0 = testing::random_tensor({s.M * s.N}, rng), bias = testing::random_tensor({s.N}, rng);
        const std::int64_t lda = ta ? s.M : s.K, ldb = tb ? s.K : s.N;
        const float* A = a.f32();
        const float* B = b.f32();
        auto ref = [&](std::int64_t i, std::int64_t j) {
          double r = 0;
          for (std::int64_t k = 0; k < s.K; ++k)
            r += double(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
          return r;
        };
#ifdef RECHUB_DIRECT_EIGEN_GEMM
        if (detail::gemm_tiles_pay(s.M, s.N, s.K)) {
          // C = 0.5 c0 + 0.75 op(A) op(B) by Eigen's driver and by its kernel in tiles.
          std::vector<float> want(c0.f32(), c0.f32() + s.M * s.N);
          for (float& v : want) v *= 0.5f;
          std::vector<float> got = want;
          auto none = [](std::int64_t, std::int64_t) {};
          constexpr int R = Eigen::RowMajor, Cm = Eigen::ColMajor;
          if (!ta && !tb) detail::eigen_gemm<R, R>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, want.data(), s.N);
          if (ta && !tb) detail::eigen_gemm<Cm, R>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, want.data(), s.N);
          if (!ta && tb) detail::eigen_gemm<R, Cm>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, want.data(), s.N);
          if (ta && tb) detail::eigen_gemm<Cm, Cm>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, want.data(), s.N);
          if (!ta && !tb) detail::eigen_gemm_tiled<R, R>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, got.data(), s.N, none);
          if (ta && !tb) detail::eigen_gemm_tiled<Cm, R>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, got.data(), s.N, none);
          if (!ta && tb) detail::eigen_gemm_tiled<R, Cm>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, got.data(), s.N, none);
          if (ta && tb) detail::eigen_gemm_tiled<Cm, Cm>(s.M, s.N, s.K, 0.75f, A, lda, B, ldb, got.data(), s.N, none);
          CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
        }
#endif
        // Through the public entry points (whichever path they take), against the reference on
        // sampled entries and every entry of the last row: beta 0.5, beta 0 over NaNs, a bias.
        std::vector<float> scaled(c0.f32(), c0.f32() + s.M * s.N);
        std::vector<float> zeroed(s.M * s.N, std::nanf("")), biased(s.M * s.N, std::nanf(""));
        detail::gemm_serial(ta, tb, s.M, s.N, s.K, 0.75f, A, lda, B, ldb, 0.5f, scaled.data(), s.N);
        detail::gemm(ta, tb, s.M, s.N, s.K, 1.0f, A, lda, B, ldb, 0.0f, zeroed.data(), s.N);
        detail::gemm_bias(ta, tb, s.M, s.N, s.K, 1.0f, A, lda, B, ldb, bias.f32(), biased.data(), s.N);
        double err = 0;
        for (std::int64_t i = 0; i < s.M; i += (i + 13 < s.M ? 13 : 1))
          for (std::int64_t j = 0; j < s.N; j += (i == s.M - 1 ? 1 : 3)) {
            const double r = ref(i, j);
            const std::int64_t e = i * s.N + j;
            err = std::max(err, std::fabs(0.5 * c0.f32()[e] + 0.75 * r - scaled[e]));
            err = std::max(err, std::fabs(r - zeroed[e]));
            err = std::max(err, std::fabs(r + bias.f32()[j] - biased[e]));
          }
        CHECK(err < 1e-3);
        CHECK(std::isfinite(zeroed[s.M * s.N - 1]));
        CHECK(std::isfinite(biased[s.M * s.N - 1]));
      }
  }
#ifdef RECHUB_AVX2_GEMM
  // The shapes above that the AVX2 kernel takes (an 8-column last panel among them).
  CHECK(detail::avx2::gemm_rows_fit(1003, 128, 96));
  CHECK(detail::avx2::gemm_rows_fit(601, 40, 37));
  CHECK(detail::avx2::gemm_rows_fit(131, 24, 300));
  // ... and the transposed-A (weight gradient) kernel: several K blocks, a ragged last one, rows
  // past the last 6-row micro-panel.
  CHECK(detail::avx2::gemm_trans_a_fit(131, 24, 300));
  CHECK(detail::avx2::gemm_trans_a_fit(134, 32, 1000));
  CHECK(detail::avx2::gemm_trans_a_fit(1003, 128, 96));
#endif
}

#ifdef RECHUB_AVX2_GEMM
// A weight gradient on several threads shares out its depth blocks (gemm_trans_a_split) and adds
// their partial sums in block order: the same floats as one thread's gemm_trans_a, for fresh C,
// a bias, beta 1 (accumulating) and beta 0.5; both for an even and an odd count of 256-deep
// blocks (1000 = 4 blocks of 250; 700 rounds 3 blocks up to 4 of 175).
// The eight ways a threaded product writes C: op(B) as stored or transposed, times a fresh C, a
// bias, beta 1 and beta 0.5; fn(trans_b, beta, bias or null).
template <class Fn>
void for_each_gemm_write(const Tensor& bias, Fn&& fn) {
  for (int tb = 0; tb < 2; ++tb)
    for (int init = 0; init < 4; ++init) {
      CAPTURE(tb);
      CAPTURE(init);
      fn(tb == 1, init == 2 ? 1.0f : init == 3 ? 0.5f : 0.0f, init == 1 ? bias.f32() : nullptr);
    }
}

TEST_CASE("the weight gradient split over threads by depth equals one thread's, bit for bit") {
  Rng rng(23);
  struct Shape3 {
    std::int64_t M, N, K;
  };
  const int threads = num_threads();
  for (Shape3 s : {Shape3{134, 32, 1000}, Shape3{256, 128, 700}, Shape3{517, 256, 512}}) {
    CAPTURE(s.M);
    CAPTURE(s.K);
    REQUIRE(detail::avx2::split_depth_fit(s.M, s.N, s.K, 1.0f));
    REQUIRE(detail::avx2::gemm_trans_a_fit(s.M, s.N, s.K));  // one thread takes gemm_trans_a
    const Tensor a = testing::random_tensor({s.K * s.M}, rng), b = testing::random_tensor({s.K * s.N}, rng);
    const Tensor c0 = testing::random_tensor({s.M * s.N}, rng), bias = testing::random_tensor({s.N}, rng);
    for_each_gemm_write(bias, [&](bool tb, float beta, const float* pb) {
      const std::int64_t ldb = tb ? s.K : s.N;
      std::vector<float> one(c0.f32(), c0.f32() + s.M * s.N), two = one;
      set_num_threads(1);
      detail::gemm_threaded(true, tb, s.M, s.N, s.K, 1.0f, a.f32(), s.M, b.f32(), ldb, beta, one.data(), s.N, pb);
      set_num_threads(2);
      detail::gemm_threaded(true, tb, s.M, s.N, s.K, 1.0f, a.f32(), s.M, b.f32(), ldb, beta, two.data(), s.N, pb);
      CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
    });
  }
  set_num_threads(threads);
}

TEST_CASE("the row kernel shared out in tiles over threads equals one thread's, bit for bit") {
  // 301 rows: six 48-row tiles and a 13-row one, handed to whichever thread is free.
  Rng rng(29);
  const std::int64_t M = 301, N = 136, K = 40;
  REQUIRE(detail::avx2::gemm_rows_fit(M, N, K));
  const int threads = num_threads();
  const Tensor a = testing::random_tensor({M * K}, rng), b = testing::random_tensor({K * N}, rng);
  const Tensor c0 = testing::random_tensor({M * N}, rng), bias = testing::random_tensor({N}, rng);
  for_each_gemm_write(bias, [&](bool tb, float beta, const float* pb) {
    const std::int64_t ldb = tb ? K : N;
    std::vector<float> one(c0.f32(), c0.f32() + M * N), two = one;
    set_num_threads(1);
    detail::gemm_threaded(false, tb, M, N, K, 0.75f, a.f32(), K, b.f32(), ldb, beta, one.data(), N, pb);
    set_num_threads(2);
    detail::gemm_threaded(false, tb, M, N, K, 0.75f, a.f32(), K, b.f32(), ldb, beta, two.data(), N, pb);
    CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
    double err = 0;  // and right: against a double product
    for (std::int64_t i = 0; i < M; i += 5)
      for (std::int64_t j = 0; j < N; ++j) {
        double ref = pb ? pb[j] : beta * c0.f32()[i * N + j];
        for (std::int64_t k = 0; k < K; ++k)
          ref += 0.75 * a.f32()[i * K + k] * (tb ? b.f32()[j * K + k] : b.f32()[k * N + j]);
        err = std::max(err, std::fabs(ref - two[std::size_t(i * N + j)]));
      }
    CHECK(err < 1e-4);
  });
  set_num_threads(threads);
}
#endif

// Var::grad_for_write / share_grad_if_first: an op that is the first to send a gradient into an input
// stores it (or hands its own output's gradient on); any later contribution adds. Each op below runs on h = x + 0 (an intermediate, whose gradient starts empty:
// the store path) alone, with a second consumer of h created before it (the op stores, the other
// adds) and after it (the other adds first, the op adds), and on x itself (a parameter: always the
// add path). x's gradient must be the same in all of them, plus 3 where the other consumer (3 h) is.
TEST_CASE("an op's first input gradient is stored, later ones add (grad_for_write), bit for bit") {
  Rng rng(21);
  const std::int64_t N = 300, C = 40, O = 24;  // large enough for the threaded GEMM and BatchNorm paths
  const Tensor x0 = testing::random_tensor({N, C}, rng);
  Parameter W(testing::random_tensor({O, C}, rng)), bias(testing::random_tensor({O}, rng)),
      gamma(testing::random_tensor({C}, rng)), beta(testing::random_tensor({C}, rng)),
      slope(Tensor::full({C}, 0.25f)), table(testing::random_tensor({7, C}, rng)),
      table_rows(testing::random_tensor({N, C}, rng));
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0f);
  Tensor ids = Tensor::empty({N}, DType::i32);
  for (std::int64_t r = 0; r < N; ++r) ids.i32()[r] = static_cast<std::int32_t>(r % 7);
  const Tensor* id_list[] = {&ids};
  const std::pair<const char*, std::function<Var(const Var&)>> ops[] = {
      {"linear", [&](const Var& h) { return linear(h, W.var(), bias.var()); }},
      {"batch_norm1d_act", [&](const Var& h) {
         return batch_norm1d_act(h, gamma.var(), beta.var(), rm, rv, true, 0.1f, 1e-5f, ActKind::prelu, slope.var());
       }},
      {"add_gathered_rows", [&](const Var& h) {
         const Var tables[] = {table.var()};
         return add_gathered_rows(h, Var(), tables, id_list, 1);
       }},
      {"l2_normalize", [&](const Var& h) { return l2_normalize(h); }},
      {"row_dot", [&](const Var& h) { return row_dot(h, l2_normalize(table_rows.var()), 0.5f); }},
  };
  for (const auto& [name, op] : ops) {
    const std::string op_name = name;
    CAPTURE(op_name);
    // variant 0: op on x; 1: on h; 2: other consumer before the op; 3: after it.
    auto x_grad = [&](int variant) {
      Parameter x(x0.clone());
      const Var h = variant == 0 ? x.var() : add_scalar(x.var(), 0.0f);
      const Var before = variant == 2 ? scale(h, 3.0f) : Var();
      const Var y = op(h);
      const Var after = variant == 3 ? scale(h, 3.0f) : Var();
      Rng r(5);
      Parameter weights(testing::random_tensor(y.shape(), r));
      Var loss = sum(mul(y, weights.var()));
      if (variant >= 2) loss = add(loss, sum(variant == 2 ? before : after));
      tape().backward(loss);
      Tensor g = x.grad().clone();
      end_step();
      return g;
    };
    const Tensor g0 = x_grad(0), g1 = x_grad(1), g2 = x_grad(2), g3 = x_grad(3);
    int differ[3] = {0, 0, 0};
    for (std::int64_t i = 0; i < N * C; ++i) {
      differ[0] += g1.f32()[i] != g0.f32()[i];
      differ[1] += g2.f32()[i] != g0.f32()[i] + 3.0f;
      // Adding onto 3 may fuse into one multiply-add (one rounding instead of two): within an ulp.
      differ[2] += std::fabs(g3.f32()[i] - (g0.f32()[i] + 3.0f)) > 1e-6f * (std::fabs(g0.f32()[i]) + 3.0f);
    }
    CHECK(differ[0] == 0);
    CHECK(differ[1] == 0);
    CHECK(differ[2] == 0);
    CHECK(std::fabs(g0.f32()[17]) > 0.0f);
  }
}
