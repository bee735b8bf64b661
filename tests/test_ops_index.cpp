// Index ops (gather_rows, embedding_bag, select_rows, gather_last) and topk.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "gradcheck.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/topk.hpp"
#include "rechub/ops/unique_rows.hpp"

using namespace rechub;
using testing::check_gradients;
using testing::random_tensor;

namespace {
Tensor ids_tensor(const Shape& s, std::vector<std::int32_t> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
}  // namespace

TEST_CASE("gather_rows looks up rows for ids of any shape") {
  Rng rng(1);
  Tensor table = random_tensor({5, 3}, rng);
  Tensor ids = ids_tensor({2, 2}, {4, 0, 4, 2});
  Var y = gather_rows(constant(table), ids);
  REQUIRE(y.shape() == Shape{2, 2, 3});
  const std::int32_t* pid = ids.i32();
  for (int i = 0; i < 4; ++i)
    for (int d = 0; d < 3; ++d) CHECK(y.value().f32()[i * 3 + d] == table.f32()[pid[i] * 3 + d]);
  CHECK(gather_rows(constant(table), ids_tensor({3}, {1, 1, 1})).shape() == Shape{3, 3});
  end_step();
  check_gradients([&](const std::vector<Var>& v) { return gather_rows(v[0], ids); }, {table});
  check_gradients(
      [&](const std::vector<Var>& v) {
        return gather_rows(v[0], ids_tensor({6}, {1, 3, 1, 1, 0, 3}));
      },
      {table});
}

TEST_CASE("gather_rows accumulates gradients of repeated ids and marks touched rows") {
  Rng rng(2);
  Parameter table(random_tensor({6, 4}, rng));
  table.track_rows(true);
  Tensor ids = ids_tensor({5}, {3, 1, 3, 3, 5});
  Tensor seed = random_tensor({5, 4}, rng);
  tape().backward(gather_rows(table.var(), ids), seed);
  end_step();
  for (int r = 0; r < 6; ++r)
    for (int d = 0; d < 4; ++d) {
      float want = 0.0f;  // summed in id order, as the backward does
      for (int i = 0; i < 5; ++i)
        if (ids.i32()[i] == r) want += seed.f32()[i * 4 + d];
      CHECK(table.grad().f32()[r * 4 + d] == want);
    }
  std::vector<std::int32_t> touched = table.touched_rows()->rows;
  std::sort(touched.begin(), touched.end());
  CHECK(touched == std::vector<std::int32_t>{1, 3, 5});
}

TEST_CASE("bad ids raise DataError naming the op, the id and the table shape") {
  Tensor table = Tensor::zeros({5, 3});
  CHECK_THROWS_WITH_AS(gather_rows(constant(table), ids_tensor({3}, {0, 1, 7})),
                       "gather_rows: id 7 at position 2 is out of range for table [5, 3]", DataError);
  CHECK_THROWS_WITH_AS(gather_rows(constant(table), ids_tensor({2}, {-1, 1})),
                       "gather_rows: id -1 at position 0 is out of range for table [5, 3]", DataError);
  CHECK_THROWS_WITH_AS(embedding_bag(constant(table), ids_tensor({1, 2}, {1, 5}), BagMode::sum),
                       "embedding_bag: id 5 at position 1 is out of range for table [5, 3]", DataError);
  CHECK_THROWS_WITH_AS(gather_rows(constant(table), Tensor::zeros({2})),
                       "gather_rows: ids must be int32, got float32 [2]", ShapeError);
  CHECK_THROWS_WITH_AS(embedding_bag(constant(table), ids_tensor({2}, {1, 2}), BagMode::sum),
                       "embedding_bag: ids must be [B, L], got [2]", ShapeError);
  CHECK_THROWS_WITH_AS(bag_mode_from_string("max"), "embedding_bag: pooling 'max' is not one of sum, mean, concat",
                       ConfigError);
  end_step();
}

TEST_CASE("embedding_bag sum / mean / concat skip padding id 0") {
  Rng rng(3);
  Tensor table = random_tensor({6, 3}, rng);
  // Row 0: two real ids and padding; row 1: all padding; row 2: a repeated id.
  Tensor ids = ids_tensor({3, 4}, {2, 0, 5, 0,  //
                                   0, 0, 0, 0,  //
                                   1, 1, 4, 3});
  const float* T = table.f32();
  Var s = embedding_bag(constant(table), ids, BagMode::sum);
  Var m = embedding_bag(constant(table), ids, BagMode::mean);
  Var c = embedding_bag(constant(table), ids, BagMode::concat);
  REQUIRE(s.shape() == Shape{3, 3});
  REQUIRE(m.shape() == Shape{3, 3});
  REQUIRE(c.shape() == Shape{3, 4, 3});
  for (int d = 0; d < 3; ++d) {
    const float s0 = T[2 * 3 + d] + T[5 * 3 + d];
    const float s2 = T[1 * 3 + d] + T[1 * 3 + d] + T[4 * 3 + d] + T[3 * 3 + d];
    CHECK(s.value().f32()[d] == doctest::Approx(s0).epsilon(1e-6));
    CHECK(s.value().f32()[3 + d] == 0.0f);
    CHECK(s.value().f32()[6 + d] == doctest::Approx(s2).epsilon(1e-6));
    CHECK(m.value().f32()[d] == doctest::Approx(s0 / 2).epsilon(1e-6));
    CHECK(m.value().f32()[3 + d] == 0.0f);
    CHECK(m.value().f32()[6 + d] == doctest::Approx(s2 / 4).epsilon(1e-6));
    for (int p = 0; p < 12; ++p) {
      const std::int32_t id = ids.i32()[p];
      CHECK(c.value().f32()[p * 3 + d] == (id == 0 ? 0.0f : T[id * 3 + d]));
    }
  }
  // padding_idx = -1: every id is real (Torch-RecHub without a mask).
  Var nomask = embedding_bag(constant(table), ids, BagMode::mean, -1);
  for (int d = 0; d < 3; ++d) CHECK(nomask.value().f32()[3 + d] == doctest::Approx(T[d]).epsilon(1e-6));
  end_step();

  for (BagMode mode : {BagMode::sum, BagMode::mean, BagMode::concat}) {
    CAPTURE(bag_mode_name(mode));
    check_gradients([&](const std::vector<Var>& v) { return embedding_bag(v[0], ids, mode); }, {table});
    check_gradients([&](const std::vector<Var>& v) { return embedding_bag(v[0], ids, mode, -1); }, {table});
    // Row 0 of the table (the padding id) gets exactly zero gradient; touched rows exclude it.
    Parameter p(table.clone());
    p.track_rows(true);
    tape().backward(embedding_bag(p.var(), ids, mode),
                    Tensor::full(mode == BagMode::concat ? Shape{3, 4, 3} : Shape{3, 3}, 1.0f));
    end_step();
    for (int d = 0; d < 3; ++d) CHECK(p.grad().f32()[d] == 0.0f);
    std::vector<std::int32_t> touched = p.touched_rows()->rows;
    std::sort(touched.begin(), touched.end());
    CHECK(touched == std::vector<std::int32_t>{1, 2, 3, 4, 5});
    // mean: row 0 spreads 1/2 to ids 2 and 5, row 2 spreads 1/4 to 1 (twice), 4 and 3.
    if (mode == BagMode::mean) {
      CHECK(p.grad().f32()[2 * 3] == 0.5f);
      CHECK(p.grad().f32()[1 * 3] == 0.5f);
      CHECK(p.grad().f32()[4 * 3] == 0.25f);
    }
  }
}

TEST_CASE("table gradients are bit-identical for 1 and 2 threads") {
  Rng rng(4);
  const int V = 500, N = 20000, D = 16;
  Tensor table = random_tensor({V, D}, rng);
  std::vector<std::int32_t> v(N);
  for (auto& id : v) id = static_cast<std::int32_t>(rng.below(V / 10) * 10 + rng.below(2));  // many repeats
  Tensor ids = Tensor::from_vector({N / 10, 10}, v.data());
  Tensor seed = random_tensor({N / 10, D}, rng);
  Tensor seed_rows = random_tensor({N / 10, 10, D}, rng);
  auto run = [&](int threads) {
    set_num_threads(threads);
    Parameter p(table.clone());
    tape().backward(embedding_bag(p.var(), ids, BagMode::mean), seed);
    end_step();
    tape().backward(gather_rows(p.var(), ids), seed_rows);
    end_step();
    const Tensor flat_ids = ids.reshape({N});
    const Tensor* id_list[] = {&flat_ids};
    const Var tables[] = {p.var()};
    tape().backward(add_gathered_rows(Var(), Var(), tables, id_list, 1), seed_rows.reshape({N, D}));
    end_step();
    return p.grad().clone();
  };
  const int before = num_threads();
  Tensor g1 = run(1), g2 = run(2);
  set_num_threads(before);
  CHECK(std::memcmp(g1.raw(), g2.raw(), g1.nbytes()) == 0);
}

TEST_CASE("select_rows picks one row per batch entry") {
  Rng rng(5);
  Tensor x = random_tensor({3, 4, 2}, rng);
  Tensor idx = ids_tensor({3}, {2, 0, 3});
  Var y = select_rows(constant(x), idx);
  REQUIRE(y.shape() == Shape{3, 2});
  for (int b = 0; b < 3; ++b)
    for (int d = 0; d < 2; ++d) CHECK(y.value().f32()[b * 2 + d] == x.f32()[(b * 4 + idx.i32()[b]) * 2 + d]);
  CHECK_THROWS_WITH_AS(select_rows(constant(x), ids_tensor({3}, {0, 4, 0})),
                       "select_rows: index 4 at row 1 is out of range for x [3, 4, 2]", DataError);
  CHECK_THROWS_WITH_AS(select_rows(constant(x), ids_tensor({2}, {0, 1})),
                       "select_rows: x [3, 4, 2] and idx [2] do not match (expects x [B, K, D] and idx [B])",
                       ShapeError);
  end_step();
  check_gradients([&](const std::vector<Var>& v) { return select_rows(v[0], idx); }, {x});
  // Used twice (gradients must accumulate, not overwrite).
  Tensor idx2 = ids_tensor({3}, {2, 1, 3});
  check_gradients(
      [&](const std::vector<Var>& v) {
        return concat({select_rows(v[0], idx), select_rows(v[0], idx2)}, 1);
      },
      {x});
}

TEST_CASE("gather_last picks columns per row, repeated columns accumulate") {
  Rng rng(6);
  Tensor x = random_tensor({2, 3, 5}, rng);
  Tensor idx = ids_tensor({2, 3, 2}, {0, 4, 1, 1, 2, 0, 3, 3, 4, 0, 2, 2});
  Var y = gather_last(constant(x), idx);
  REQUIRE(y.shape() == Shape{2, 3, 2});
  for (int r = 0; r < 6; ++r)
    for (int j = 0; j < 2; ++j) CHECK(y.value().f32()[r * 2 + j] == x.f32()[r * 5 + idx.i32()[r * 2 + j]]);
  CHECK_THROWS_WITH_AS(gather_last(constant(x), ids_tensor({2, 3, 1}, {0, 0, 5, 0, 0, 0})),
                       "gather_last: index 5 at position 2 is out of range for x [2, 3, 5]", DataError);
  end_step();
  check_gradients([&](const std::vector<Var>& v) { return gather_last(v[0], idx); }, {x});
  check_gradients(
      [&](const std::vector<Var>& v) {
        return concat({gather_last(v[0], idx), gather_last(v[0], idx)}, 2);
      },
      {x});
}

namespace {
// Reference: stable descending sort of (value, index) pairs, NaN last.
void check_topk_against_sort(const Tensor& vals, std::int64_t k) {
  const std::int64_t N = vals.rows(), M = vals.cols();
  TopK t = topk(vals, k);
  REQUIRE(t.values.numel() == N * k);
  for (std::int64_t r = 0; r < N; ++r) {
    std::vector<std::int32_t> order(static_cast<std::size_t>(M));
    std::iota(order.begin(), order.end(), 0);
    const float* row = vals.f32() + r * M;
    auto key = [](float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; };
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int32_t a, std::int32_t b) { return key(row[a]) > key(row[b]); });
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t want = order[static_cast<std::size_t>(j)];
      CHECK(t.indices.i32()[r * k + j] == want);
      const float got = t.values.f32()[r * k + j];
      CHECK((got == row[want] || (std::isnan(got) && std::isnan(row[want]))));
    }
  }
}
}  // namespace

TEST_CASE("add_gathered_rows: base + bias + table lookups, gradients, shape errors") {
  Rng rng(12);
  const Tensor i0 = ids_tensor({5}, {2, 0, 2, 1, 2}), i1 = ids_tensor({5}, {0, 3, 3, 1, 0});
  const Tensor* ids[] = {&i0, &i1};
  check_gradients(
      [&](const std::vector<Var>& v) {
        const Var tables[] = {v[2], v[3]};
        return add_gathered_rows(v[0], v[1], tables, ids, 2);
      },
      {random_tensor({5, 3}, rng), random_tensor({3}, rng), random_tensor({3, 3}, rng), random_tensor({4, 3}, rng)});
  // Without base and bias: exactly the sum of the two lookups.
  Parameter t0(random_tensor({3, 3}, rng)), t1(random_tensor({4, 3}, rng));
  t0.track_rows(true);
  const Var tables[] = {t0.var(), t1.var()};
  Var y = add_gathered_rows(Var(), Var(), tables, ids, 2);
  for (int b = 0; b < 5; ++b)
    for (int c = 0; c < 3; ++c)
      CHECK(y.value().f32()[b * 3 + c] ==
            t0.value().f32()[i0.i32()[b] * 3 + c] + t1.value().f32()[i1.i32()[b] * 3 + c]);
  tape().backward(y, Tensor::full({5, 3}, 1.0f));
  CHECK(t0.grad().f32()[2 * 3] == 3.0f);  // id 2 appears three times
  std::vector<std::int32_t> touched = t0.touched_rows()->rows;
  std::sort(touched.begin(), touched.end());
  CHECK(touched == std::vector<std::int32_t>{0, 1, 2});
  end_step();
  const Tensor short_ids = ids_tensor({4}, {0, 0, 0, 0}), bad_id = ids_tensor({5}, {0, 0, 9, 0, 0});
  const Tensor* mism[] = {&i0, &short_ids};
  CHECK_THROWS_WITH_AS(add_gathered_rows(Var(), Var(), tables, mism, 2),
                       doctest::Contains("table 1 [4, 3] with ids [4] does not match"), ShapeError);
  const Tensor* oob[] = {&bad_id};
  CHECK_THROWS_WITH_AS(add_gathered_rows(Var(), Var(), tables, oob, 1), doctest::Contains("id 9 at position 2"),
                       DataError);
  CHECK_THROWS_WITH_AS(add_gathered_rows(constant(Tensor::zeros({5, 2})), Var(), tables, ids, 2),
                       doctest::Contains("base [5, 2] is not [5, 3]"), ShapeError);
  end_step();
}

TEST_CASE("unique_rows: distinct id tuples in first-appearance order, inverse and counts") {
  std::vector<std::int32_t> a = {5, 3, 5, 5, 7, 3, 5}, b = {1, 2, 1, 2, 0, 2, 1};
  const Tensor ta = Tensor::from_vector(Shape{7}, a.data()), tb = Tensor::from_vector(Shape{7, 1}, b.data());
  const Tensor* cols[] = {&ta, &tb};
  UniqueRows u = unique_rows(cols, 2);
  REQUIRE(u.unique == 4);  // (5,1) (3,2) (5,2) (7,0)
  CHECK(std::vector<std::int32_t>(u.ids[0].i32(), u.ids[0].i32() + 4) == std::vector<std::int32_t>{5, 3, 5, 7});
  CHECK(std::vector<std::int32_t>(u.ids[1].i32(), u.ids[1].i32() + 4) == std::vector<std::int32_t>{1, 2, 2, 0});
  CHECK(std::vector<std::int32_t>(u.inverse.i32(), u.inverse.i32() + 7) ==
        std::vector<std::int32_t>{0, 1, 0, 2, 3, 1, 0});
  CHECK(u.inverse.shape() == Shape{7});
  CHECK(std::vector<float>(u.counts.f32(), u.counts.f32() + 4) == std::vector<float>{3, 2, 1, 1});
  // One column alone merges what the second told apart; random ids agree with a std::map count.
  UniqueRows one = unique_rows(cols, 1);
  CHECK(one.unique == 3);
  Rng rng(3);
  std::vector<std::int32_t> r(5000);
  for (auto& x : r) x = static_cast<std::int32_t>(rng.below(700)) - 50;  // negative ids hash too
  const Tensor tr = Tensor::from_vector(Shape{50, 100}, r.data());
  const Tensor* rc[] = {&tr};
  UniqueRows ur = unique_rows(rc, 1);
  std::vector<std::int32_t> sorted = r;
  std::sort(sorted.begin(), sorted.end());
  CHECK(ur.unique == std::unique(sorted.begin(), sorted.end()) - sorted.begin());
  float total = 0.0f;
  for (std::int64_t j = 0; j < ur.unique; ++j) total += ur.counts.f32()[j];
  CHECK(total == 5000.0f);
  for (std::int64_t i = 0; i < 5000; ++i) REQUIRE(ur.ids[0].i32()[ur.inverse.i32()[i]] == r[std::size_t(i)]);
  CHECK(ur.inverse.shape() == Shape{50, 100});
  // Columns must agree in size and be int32.
  const Tensor short_col = Tensor::from_vector(Shape{3}, a.data()), f = Tensor::zeros({7});
  const Tensor* bad1[] = {&ta, &short_col};
  CHECK_THROWS_WITH_AS(unique_rows(bad1, 2), doctest::Contains("column 1 [3] has 3 elements"), ShapeError);
  const Tensor* bad2[] = {&f};
  CHECK_THROWS_WITH_AS(unique_rows(bad2, 1), doctest::Contains("must be int32"), ShapeError);
  end_step();
}

TEST_CASE("topk matches a full stable sort, ties to the lower index") {
  Rng rng(7);
  // Values drawn from 7 levels so most rows have many ties.
  Tensor ties = Tensor::empty({50, 40});
  for (std::int64_t i = 0; i < ties.numel(); ++i) ties.f32()[i] = static_cast<float>(rng.below(7)) - 3.0f;
  Tensor cont = random_tensor({300, 257}, rng);
  for (std::int64_t k : {0, 1, 2, 5, 10, 39, 40}) check_topk_against_sort(ties, k);
  for (std::int64_t k : {1, 10, 100, 257}) check_topk_against_sort(cont, k);
  // NaN ranks below every number; infinities are ordinary values.
  Tensor odd = Tensor::from_vector({1, 5}, std::vector<float>{std::nanf(""), 1.0f, -INFINITY, INFINITY, 1.0f}.data());
  check_topk_against_sort(odd, 5);
  TopK o = topk(odd, 3);
  CHECK(o.indices.i32()[0] == 3);
  CHECK(o.indices.i32()[1] == 1);
  CHECK(o.indices.i32()[2] == 4);
  // 1-d input.
  TopK one = topk(Tensor::from_vector({4}, std::vector<float>{0.5f, 2.0f, -1.0f, 2.0f}.data()), 2);
  REQUIRE(one.indices.shape() == Shape{2});
  CHECK(one.indices.i32()[0] == 1);
  CHECK(one.indices.i32()[1] == 3);
  CHECK(one.values.f32()[0] == 2.0f);
  CHECK_THROWS_WITH_AS(topk(cont, 258), "topk: k = 258 exceeds the 257 columns of values [300, 257]", ShapeError);
  CHECK_THROWS_WITH_AS(topk(Tensor::zeros({2, 3}, DType::i32), 1), "topk: values must be float32, got int32 [2, 3]",
                       ShapeError);
}
