// Retrieval: ExactIndex against brute force, search_one's heap-free selection against a full sort
// and the heap, HnswIndex recall against ExactIndex, add/save/load, exclusions, multi-interest merge.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "gradcheck.hpp"
#include "rechub/io/atomic_file.hpp"
#include "rechub/retrieval/exact_index.hpp"
#include "rechub/retrieval/hnsw_index.hpp"
#include "rechub/retrieval/merge.hpp"

using namespace rechub;

namespace {

Tensor gaussian(std::int64_t n, std::int64_t d, Rng& rng) {
  Tensor t = Tensor::empty({n, d});
  for (std::int64_t i = 0; i < n * d; ++i) t.f32()[i] = static_cast<float>(rng.normal());
  return t;
}

/// Scores of every item for one query, in double (normalised when cosine).
std::vector<double> brute_scores(const Tensor& items, const float* q, Metric metric) {
  const std::int64_t n = items.dim(0), d = items.dim(1);
  auto norm = [&](const float* x) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += double(x[j]) * x[j];
    return std::max(std::sqrt(s), 1e-12);
  };
  const double qn = metric == Metric::cosine ? norm(q) : 1.0;
  std::vector<double> s(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const float* x = items.f32() + i * d;
    double dot = 0;
    for (std::int64_t j = 0; j < d; ++j) dot += double(q[j]) * x[j];
    s[i] = metric == Metric::cosine ? dot / (qn * norm(x)) : dot;
  }
  return s;
}

/// Checks one result row against brute force: scores are the true scores of the returned ids, in
/// descending order, equal (to float rounding) to the true top-k scores, and ids are distinct.
/// Float GEMM vs double sums differ by ~1e-6 relative, so near-ties may legally swap ids; the
/// score sequence pins the result without depending on them.
void check_against_brute(const Tensor& items, const float* q, Metric metric, std::int64_t k, const float* scores,
                         const std::int32_t* ids) {
  std::vector<double> s = brute_scores(items, q, metric);
  std::vector<double> sorted = s;
  std::sort(sorted.begin(), sorted.end(), std::greater<double>());
  std::set<std::int32_t> seen;
  for (std::int64_t j = 0; j < k; ++j) {
    REQUIRE(ids[j] >= 0);
    REQUIRE(ids[j] < items.dim(0));
    CHECK(seen.insert(ids[j]).second);
    CHECK(scores[j] == doctest::Approx(s[ids[j]]).epsilon(1e-5));
    CHECK(scores[j] == doctest::Approx(sorted[j]).epsilon(1e-5));
    if (j) CHECK(scores[j] <= scores[j - 1]);
  }
}

/// Fraction of exact top-k labels the approximate result recovered.
double recall(const SearchResult& exact, const SearchResult& approx) {
  const std::int64_t q = exact.ids.dim(0), k = exact.ids.dim(1);
  std::int64_t hit = 0;
  for (std::int64_t i = 0; i < q; ++i) {
    std::set<std::int32_t> truth(exact.ids.i32() + i * k, exact.ids.i32() + (i + 1) * k);
    for (std::int64_t j = 0; j < k; ++j) hit += truth.count(approx.ids.i32()[i * k + j]);
  }
  return double(hit) / double(q * k);
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rechub_test_retrieval_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("ExactIndex matches brute force for inner product and cosine over several blocks and tiles") {
  Rng rng(3);
  // 5000 items span two item blocks (4096 + 904); 70 queries span two query tiles (64 + 6).
  Tensor items = gaussian(5000, 8, rng), queries = gaussian(70, 8, rng);
  for (Metric metric : {Metric::inner_product, Metric::cosine}) {
    ExactIndex index(items, metric);
    SearchResult r = index.search(queries, 25);
    CHECK(r.scores.shape() == Shape{70, 25});
    CHECK(r.ids.shape() == Shape{70, 25});
    for (std::int64_t q = 0; q < 70; ++q)
      check_against_brute(items, queries.f32() + q * 8, metric, 25, r.scores.f32() + q * 25, r.ids.i32() + q * 25);
    // The serving path (GEMV instead of GEMM, so scores may differ in the last bit) agrees.
    ExactIndex::Scratch scratch(index, 25);
    std::vector<float> s(25);
    std::vector<std::int32_t> ids(25);
    for (std::int64_t q : {0, 63, 64, 69}) {
      index.search_one(queries.f32() + q * 8, 25, s.data(), ids.data(), scratch);
      for (int j = 0; j < 25; ++j) {
        CHECK(ids[j] == r.ids.i32()[q * 25 + j]);
        CHECK(s[j] == doctest::Approx(r.scores.f32()[q * 25 + j]).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("ExactIndex with k == N returns every item once, k > N pads with -1") {
  Rng rng(5);
  Tensor items = gaussian(50, 6, rng), queries = gaussian(4, 6, rng);
  ExactIndex index(items, Metric::cosine);
  SearchResult r = index.search(queries, 50);
  for (std::int64_t q = 0; q < 4; ++q) {
    check_against_brute(items, queries.f32() + q * 6, Metric::cosine, 50, r.scores.f32() + q * 50, r.ids.i32() + q * 50);
  }
  SearchResult p = index.search(queries, 53);
  for (std::int64_t q = 0; q < 4; ++q) {
    for (int j = 0; j < 50; ++j) CHECK(p.ids.i32()[q * 53 + j] == r.ids.i32()[q * 50 + j]);
    for (int j = 50; j < 53; ++j) {
      CHECK(p.ids.i32()[q * 53 + j] == -1);
      CHECK(p.scores.f32()[q * 53 + j] == -std::numeric_limits<float>::infinity());
    }
  }
}

TEST_CASE("ExactIndex breaks ties by the lower row and maps rows to labels") {
  Tensor items = Tensor::full({6, 3}, 1.0f);
  items.f32()[3 * 3] = 2.0f;  // row 3 scores highest
  float q[] = {1, 1, 1};
  ExactIndex index(items);
  std::vector<float> s(4);
  std::vector<std::int32_t> ids(4);
  index.search_one(q, 4, s.data(), ids.data());
  CHECK(ids == std::vector<std::int32_t>{3, 0, 1, 2});
  CHECK(s == std::vector<float>{4, 3, 3, 3});

  ExactIndex labelled(items, Metric::inner_product, {60, 50, 40, 30, 20, 10});
  labelled.search_one(q, 4, s.data(), ids.data());
  CHECK(ids == std::vector<std::int32_t>{30, 60, 50, 40});  // ties still by row
  CHECK(labelled.row_of(40) == 2);
  CHECK(labelled.row_of(41) == -1);

  // Labels beyond int32 need the int64 output.
  ExactIndex big(items, Metric::inner_product, {0, 1, 2, std::int64_t(1) << 40, 4, 5});
  CHECK_THROWS_WITH_AS(big.search(Tensor::from_vector({1, 3}, q), 2),
                       "ExactIndex::search: label 1099511627776 does not fit in int32; call search_into with int64 labels",
                       ConfigError);
  std::vector<std::int64_t> ids64(2);
  big.search_into(q, 1, 2, s.data(), ids64.data());
  CHECK(ids64 == std::vector<std::int64_t>{std::int64_t(1) << 40, 0});

  CHECK_THROWS_WITH_AS(ExactIndex(items, Metric::inner_product, {1, 2, 3, 1, 5, 6}),
                       "ExactIndex: label 1 appears twice (rows 0 and 3)", ConfigError);
  CHECK_THROWS_WITH_AS(index.search(Tensor::zeros({2, 4}), 3),
                       "ExactIndex::search: queries [2, 4] do not match items [6, 3] (expects last dim 3)", ShapeError);
}

namespace {

/// The documented top-k of a score vector by a full sort: score descending, equal scores (-0 ==
/// +0 included) by the lower row, NaN never; slots past the non-NaN count are (-inf, -1).
void sorted_topk(const std::vector<float>& s, std::int64_t k, std::vector<float>& scores, std::vector<std::int32_t>& ids) {
  std::vector<std::int32_t> rows;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!std::isnan(s[i])) rows.push_back(static_cast<std::int32_t>(i));
  std::stable_sort(rows.begin(), rows.end(), [&](std::int32_t a, std::int32_t b) { return s[a] > s[b]; });
  scores.assign(static_cast<std::size_t>(k), -std::numeric_limits<float>::infinity());
  ids.assign(static_cast<std::size_t>(k), -1);
  for (std::size_t j = 0; j < rows.size() && j < static_cast<std::size_t>(k); ++j) {
    scores[j] = s[rows[j]];
    ids[j] = rows[j];
  }
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

/// search_one over items [N, 1] with the query {1}: every score is exactly the item's value (one
/// product by 1; only a -0 item comes out as +0, the GEMV's accumulator starting at +0), so the
/// selection sees `s` itself. Checks ids and score bits against the full sort, and against the
/// heap-based batch search, which computes the same exact products.
void check_selection(const std::vector<float>& s, std::int64_t k, const std::string& what) {
  CAPTURE(what);
  CAPTURE(k);
  const auto n = static_cast<std::int64_t>(s.size());
  ExactIndex index(Tensor::from_vector({n, 1}, s.data()));
  std::vector<float> want_s, got_s(static_cast<std::size_t>(k));
  std::vector<std::int32_t> want_ids, got_ids(static_cast<std::size_t>(k));
  sorted_topk(s, k, want_s, want_ids);
  const float one = 1.0f;
  ExactIndex::Scratch scratch(index, k);
  index.search_one(&one, k, got_s.data(), got_ids.data(), scratch);
  CHECK(got_ids == want_ids);
  int bad_bits = 0;
  for (std::int64_t j = 0; j < k; ++j) bad_bits += !(same_bits(got_s[j], want_s[j]) || (got_s[j] == 0 && want_s[j] == 0));
  CHECK(bad_bits == 0);
  // The heap (batched path) gives the same ids and score bits.
  SearchResult heap = index.search(Tensor::from_vector({1, 1}, &one), k);
  CHECK(std::vector<std::int32_t>(heap.ids.i32(), heap.ids.i32() + k) == got_ids);
  int bad_heap_bits = 0;
  for (std::int64_t j = 0; j < k; ++j) bad_heap_bits += !same_bits(heap.scores.f32()[j], got_s[j]);
  CHECK(bad_heap_bits == 0);
}

}  // namespace

TEST_CASE("ExactIndex::search_one selects exactly what a full sort does (ties, NaN, infinities, -0, any k)") {
  Rng rng(41);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  auto random_scores = [&](std::int64_t n) {
    std::vector<float> s(static_cast<std::size_t>(n));
    for (auto& v : s) v = static_cast<float>(rng.normal());
    return s;
  };
  // One block (3,706 = MovieLens-1M's catalogue) and three blocks (4096 + 4096 + 1808).
  for (std::int64_t n : {3706, 10000}) {
    for (std::int64_t k : {1, 2, 10, 100, 1000}) check_selection(random_scores(n), k, "gaussian");
    std::vector<float> ties(static_cast<std::size_t>(n));  // 8 distinct values: every boundary is a tie
    for (auto& v : ties) v = static_cast<float>(rng.below(8));
    for (std::int64_t k : {1, 100, 700}) check_selection(ties, k, "8 distinct values");
    check_selection(std::vector<float>(static_cast<std::size_t>(n), 0.5f), 100, "all equal");
    std::vector<float> rising(static_cast<std::size_t>(n)), falling(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      rising[i] = static_cast<float>(i);  // the best items sit in the last block
      falling[i] = static_cast<float>(-i);
    }
    check_selection(rising, 100, "rising");
    check_selection(falling, 100, "falling");
    // NaN is never returned (excluded items are NaN-masked); infinities are ordinary scores.
    std::vector<float> odd = random_scores(n);
    for (std::int64_t i = 0; i < n; i += 3) odd[i] = nan;
    odd[5] = inf;
    odd[7] = -inf;
    odd[11] = -inf;
    check_selection(odd, 100, "NaN every third, +-inf");
    check_selection(odd, n, "NaN every third, k = N pads");
    // -0 and +0 compare equal: their order is by row, and the returned score keeps its sign.
    std::vector<float> zeros(static_cast<std::size_t>(n), -1.0f);
    for (std::int64_t i = 0; i < 300; ++i) zeros[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(n)))] = (i % 2) ? 0.0f : -0.0f;
    check_selection(zeros, 100, "mixed -0 and +0 at the boundary");
    check_selection(zeros, 400, "mixed -0 and +0, then -1");
    // Fewer than k real scores in the first block: the later blocks fill the result.
    std::vector<float> sparse = random_scores(n);
    for (std::int64_t i = 0; i < std::min<std::int64_t>(n, 4096); ++i)
      if (i % 97) sparse[i] = nan;
    check_selection(sparse, 100, "first block mostly NaN");
    std::vector<float> all_nan(static_cast<std::size_t>(n), nan);
    all_nan[n - 1] = 1.0f;
    check_selection(all_nan, 3, "one real score");
    std::vector<float> all_inf(static_cast<std::size_t>(n), -inf);
    check_selection(all_inf, 100, "all -inf (real items, not empty slots)");
  }
  // k >= N, k == N, tiny catalogues.
  check_selection(random_scores(50), 50, "k == N");
  check_selection(random_scores(50), 53, "k > N");
  check_selection(random_scores(1), 1, "one item");
  check_selection(random_scores(399), 100, "n just under 4k: no group bound");
  check_selection(random_scores(400), 100, "n == 4k: group bound");
}

TEST_CASE("search_one's rank keys order like the heap and give back the exact score") {
  const float inf = std::numeric_limits<float>::infinity();
  const float values[] = {-inf, -std::numeric_limits<float>::max(), -1.5f, -std::numeric_limits<float>::denorm_min(),
                          -0.0f, 0.0f, std::numeric_limits<float>::denorm_min(), 1e-30f, 1.0f,
                          std::numeric_limits<float>::max(), inf};
  const std::int32_t rows[] = {0, 1, 77, std::numeric_limits<std::int32_t>::max() - 1};
  std::vector<detail::TopkEntry> entries;
  for (float v : values)
    for (std::int32_t r : rows) entries.push_back({v, r});
  for (const auto& a : entries) {
    const std::uint64_t ka = detail::topk_rank_key(a.score, a.row);
    CHECK(same_bits(detail::topk_key_score(ka), a.score));
    CHECK(detail::topk_key_row(ka) == a.row);
    for (const auto& b : entries) {
      if (a.row == b.row && a.score == b.score) continue;  // one item: -0 and +0 never share a row
      const std::uint64_t kb = detail::topk_rank_key(b.score, b.row);
      CHECK((ka < kb) == detail::topk_worse(b, a));  // -0 vs +0 included: a tie broken by the row
    }
  }
}

TEST_CASE("ExactIndex::search_one allocates nothing once its Scratch holds k, and agrees with search") {
  Rng rng(43);
  Tensor items = gaussian(9000, 16, rng), queries = gaussian(20, 16, rng);
  for (Metric metric : {Metric::inner_product, Metric::cosine}) {
    ExactIndex index(items, metric);
    index.exclude(7);
    ExactIndex::Scratch scratch(index, 100);
    std::vector<float> s(100);
    std::vector<std::int32_t> ids(100);
    const std::int64_t drop[] = {3, 4000, 8999, 123456};
    index.search_one(queries.f32(), 100, s.data(), ids.data(), scratch, drop, 4);  // warm
    const long before = testing::allocations();
    for (std::int64_t q = 0; q < 20; ++q) index.search_one(queries.f32() + q * 16, 100, s.data(), ids.data(), scratch, drop, 4);
    CHECK(testing::allocations() == before);
    // Same ids as the batched (heap) search; the kernels differ (GEMV vs GEMM), so scores may
    // differ in the last bit, and none of these 20 queries has a near-tie that this would reorder.
    ExcludeLists ex;
    for (std::int64_t q = 0; q < 20; ++q) ex.add(drop, 4);
    SearchResult r = index.search(queries, 100, &ex);
    for (std::int64_t q = 0; q < 20; ++q) {
      index.search_one(queries.f32() + q * 16, 100, s.data(), ids.data(), scratch, drop, 4);
      CHECK(ids == std::vector<std::int32_t>(r.ids.i32() + q * 100, r.ids.i32() + (q + 1) * 100));
      for (int j = 0; j < 100; ++j) CHECK(s[j] == doctest::Approx(r.scores.f32()[q * 100 + j]).epsilon(1e-6));
    }
  }
}

TEST_CASE("ExactIndex exclusions: a padding row is never returned, per-query lists drop items") {
  Rng rng(9);
  Tensor items = gaussian(300, 4, rng), queries = gaussian(10, 4, rng);
  // Row 0 plays a padding embedding that would win every (positive) query.
  for (std::int64_t i = 0; i < queries.numel(); ++i) queries.f32()[i] = std::fabs(queries.f32()[i]);
  for (int j = 0; j < 4; ++j) items.f32()[j] = 10.0f;
  ExactIndex index(items);
  SearchResult before = index.search(queries, 5);
  for (std::int64_t q = 0; q < 10; ++q) CHECK(before.ids.i32()[q * 5] == 0);
  index.exclude(0);
  index.exclude(0);  // idempotent
  CHECK(index.num_excluded() == 1);
  SearchResult after = index.search(queries, 5);
  for (std::int64_t q = 0; q < 10; ++q)
    for (int j = 0; j < 5; ++j) CHECK(after.ids.i32()[q * 5 + j] != 0);

  // Excluding each query's current best shifts its list up by one.
  ExcludeLists ex;
  for (std::int64_t q = 0; q < 10; ++q) ex.add(std::vector<std::int32_t>{after.ids.i32()[q * 5], 100000});
  SearchResult shifted = index.search(queries, 4, &ex);
  for (std::int64_t q = 0; q < 10; ++q)
    for (int j = 0; j < 4; ++j) CHECK(shifted.ids.i32()[q * 4 + j] == after.ids.i32()[q * 5 + j + 1]);

  // Single-query exclusion.
  std::vector<float> s(4);
  std::vector<std::int32_t> ids(4);
  const std::int64_t drop = after.ids.i32()[0];
  index.search_one(queries.f32(), 4, s.data(), ids.data(), &drop, 1);
  for (int j = 0; j < 4; ++j) CHECK(ids[j] == shifted.ids.i32()[j]);

  CHECK_THROWS_WITH_AS(index.exclude(300), "ExactIndex::exclude: label 300 is not in the index", ConfigError);
  ExcludeLists wrong;
  wrong.add(std::vector<int>{1});
  CHECK_THROWS_WITH_AS(index.search(queries, 4, &wrong), "ExactIndex::search: 1 exclusion lists for 10 queries (1 per list)",
                       ShapeError);
  // Excluding everything leaves empty slots.
  ExactIndex tiny(gaussian(2, 4, rng));
  tiny.exclude(1);
  tiny.search_one(queries.f32(), 2, s.data(), ids.data());
  CHECK(ids[0] == 0);
  CHECK(ids[1] == -1);
}

TEST_CASE("HnswIndex recall@100 >= 0.98 against ExactIndex on 50,000 random vectors at the default ef") {
  Rng rng(2022);
  const std::int64_t n = 50000, d = 32, nq = 200, k = 100;
  Tensor items = gaussian(n, d, rng), queries = gaussian(nq, d, rng);
  ExactIndex exact(items);
  SearchResult truth = exact.search(queries, k);
  HnswOptions opt;
  opt.build_threads = 0;  // both cores: the test stays fast; the graph then varies slightly run to run
  HnswIndex hnsw(items, opt);
  CHECK(hnsw.size() == n);
  CHECK(hnsw.options().ef == HnswOptions{}.ef);
  SearchResult approx = hnsw.search(queries, k);
  const double r = recall(truth, approx);
  MESSAGE("HNSW recall@100 at ef=" << hnsw.options().ef << ": " << r);
  CHECK(r >= 0.98);
  // Returned scores are the true inner products of the returned items (1 - (1 - s) rounding).
  for (std::int64_t j = 0; j < k; ++j) {
    const std::int32_t id = approx.ids.i32()[j];
    double dot = 0;
    for (std::int64_t t = 0; t < d; ++t) dot += double(queries.f32()[t]) * items.f32()[id * d + t];
    CHECK(approx.scores.f32()[j] == doctest::Approx(dot).epsilon(1e-5).scale(10));
  }
}

TEST_CASE("HnswIndex: cosine, add after build, exclusions, save/load round trip") {
  Rng rng(17);
  const std::int64_t d = 16;
  Tensor items = gaussian(1000, d, rng);
  HnswOptions opt;
  opt.metric = Metric::cosine;
  HnswIndex index(items, opt);
  CHECK(index.next_label() == 1000);

  // New items land under labels 1000.. and are found by their own (rescaled) vectors.
  Tensor extra = gaussian(500, d, rng);
  index.add(extra);
  CHECK(index.size() == 1500);
  Tensor probe = extra.clone();
  for (std::int64_t i = 0; i < probe.numel(); ++i) probe.f32()[i] *= 3.0f;  // cosine ignores scale
  SearchResult r = index.search(probe, 3);
  for (std::int64_t i = 0; i < 500; ++i) {
    CHECK(r.ids.i32()[i * 3] == 1000 + i);
    CHECK(r.scores.f32()[i * 3] == doctest::Approx(1.0).epsilon(1e-5));
  }
  CHECK_THROWS_WITH_AS(index.add(gaussian(1, d, rng), {5}), "HnswIndex::add: label 5 is already in the index",
                       ConfigError);
  CHECK_THROWS_WITH_AS(index.add(gaussian(1, 3, rng)), "HnswIndex::add: items [1, 3] do not match index dim 16",
                       ShapeError);

  // Exact cosine agrees on a small index at a generous ef.
  Tensor all = Tensor::empty({1500, d});
  std::copy(items.f32(), items.f32() + items.numel(), all.f32());
  std::copy(extra.f32(), extra.f32() + extra.numel(), all.f32() + items.numel());
  ExactIndex exact(all, Metric::cosine);
  Tensor queries = gaussian(50, d, rng);
  CHECK(recall(exact.search(queries, 10), index.search(queries, 10)) >= 0.99);

  // Per-query, then global exclusions.
  SearchResult base = index.search(queries, 5);
  ExcludeLists ex;
  for (std::int64_t q = 0; q < 50; ++q) ex.add(std::vector<std::int32_t>{base.ids.i32()[q * 5 + 1]});
  SearchResult dropped = index.search(queries, 3, &ex);
  for (std::int64_t q = 0; q < 50; ++q) {
    CHECK(dropped.ids.i32()[q * 3] == base.ids.i32()[q * 5]);
    CHECK(dropped.ids.i32()[q * 3 + 1] == base.ids.i32()[q * 5 + 2]);
  }
  index.exclude(base.ids.i32()[0]);
  CHECK(index.num_excluded() == 1);
  SearchResult after = index.search(queries.slice(0, 1), 4);
  for (int j = 0; j < 4; ++j) CHECK(after.ids.i32()[j] == base.ids.i32()[j + 1]);

  // Save and load: same settings, same answers, and the loaded index keeps growing.
  TempDir dir;
  const std::string path = dir.path + "/items.hnsw";
  index.set_ef(64);
  index.save(path);
  HnswIndex loaded = HnswIndex::load(path);
  CHECK(loaded.size() == 1500);
  CHECK(loaded.dim() == d);
  CHECK(loaded.metric() == Metric::cosine);
  CHECK(loaded.options().ef == 64);
  CHECK(loaded.options().M == opt.M);
  CHECK(loaded.num_excluded() == 1);
  SearchResult a = index.search(queries, 10), b = loaded.search(queries, 10);
  for (std::int64_t i = 0; i < a.ids.numel(); ++i) {
    CHECK(a.ids.i32()[i] == b.ids.i32()[i]);
    CHECK(a.scores.f32()[i] == b.scores.f32()[i]);
  }
  loaded.add(gaussian(10, d, rng));
  CHECK(loaded.size() == 1510);
  CHECK(loaded.next_label() == 1510);
  int leftovers = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) leftovers += e.path().filename() != "items.hnsw";
  CHECK(leftovers == 0);

  // Load errors name the file.
  const std::string bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH_AS(HnswIndex::load(path),
                       ("HnswIndex::load: " + path + ": header announces " + std::to_string(bytes.size() - 56) +
                        " payload bytes, file holds " + std::to_string(bytes.size() - 156) + " (truncated?)")
                           .c_str(),
                       DataError);
  write_file_atomic(path, "not an index at all, but long enough to hold a header......");
  CHECK_THROWS_WITH_AS(HnswIndex::load(path), ("HnswIndex::load: " + path + ": not an HnswIndex file (bad magic)").c_str(),
                       DataError);
  write_file_atomic(path, "RHHNSW01");
  CHECK_THROWS_WITH_AS(HnswIndex::load(path),
                       ("HnswIndex::load: " + path + ": file is 8 bytes, shorter than the 56-byte header").c_str(),
                       DataError);
  // A payload hnswlib itself rejects.
  std::string garbled = bytes;
  for (std::size_t i = 56 + 16; i < 56 + 24; ++i) garbled[i] = '\x7f';  // element count
  write_file_atomic(path, garbled);
  CHECK_THROWS_WITH_AS(HnswIndex::load(path), doctest::Contains(("HnswIndex::load: " + path + ": ").c_str()), DataError);
  CHECK_THROWS_WITH_AS(HnswIndex::load(dir.path + "/missing.hnsw"),
                       ("read_file: cannot open " + dir.path + "/missing.hnsw: No such file or directory").c_str(),
                       Error);
}

TEST_CASE("HnswIndex serial build is reproducible") {
  Rng rng(23);
  Tensor items = gaussian(2000, 8, rng), queries = gaussian(20, 8, rng);
  HnswIndex a(items), b(items);
  SearchResult ra = a.search(queries, 10), rb = b.search(queries, 10);
  for (std::int64_t i = 0; i < ra.ids.numel(); ++i) {
    CHECK(ra.ids.i32()[i] == rb.ids.i32()[i]);
    CHECK(ra.scores.f32()[i] == rb.scores.f32()[i]);
  }
  // search_one agrees with the batch.
  std::vector<float> s(10);
  std::vector<std::int64_t> ids(10);
  a.search_one(queries.f32() + 8 * 3, 10, s.data(), ids.data());
  for (int j = 0; j < 10; ++j) CHECK(ids[j] == ra.ids.i32()[30 + j]);
}

TEST_CASE("merge_candidates keeps the best score per item and orders by score then label") {
  const float scores[] = {0.5f, 0.9f, 0.7f, 0.9f, 0.2f, 0.8f, 0.1f, 0.3f};
  const std::int32_t labels[] = {4, 2, 4, 7, 2, -1, 9, 7};
  std::vector<std::pair<float, std::int64_t>> work(8);
  float out_s[5];
  std::int32_t out_l[5];
  detail::merge_candidates(scores, labels, 8, 5, out_s, out_l, work.data());
  // item 2: max(0.9, 0.2); item 7: max(0.9, 0.3); item 4: max(0.5, 0.7); item 9: 0.1; -1 ignored.
  CHECK(std::vector<std::int32_t>(out_l, out_l + 5) == std::vector<std::int32_t>{2, 7, 4, 9, -1});
  CHECK(std::vector<float>(out_s, out_s + 4) == std::vector<float>{0.9f, 0.9f, 0.7f, 0.1f});
  CHECK(out_s[4] == -std::numeric_limits<float>::infinity());
}

TEST_CASE("multi-interest search equals the exact top-N by max score, over ExactIndex and HnswIndex") {
  Rng rng(31);
  const std::int64_t n = 400, d = 8, users = 6, k_int = 3, top_n = 20;
  Tensor items = gaussian(n, d, rng);
  Tensor queries = gaussian(users * k_int, d, rng).reshape({users, k_int, d});
  // User 5's last interest is inactive (all zero) and must not contribute.
  for (int j = 0; j < d; ++j) queries.f32()[(5 * k_int + 2) * d + j] = 0.0f;
  ExactIndex exact(items);
  SearchResult r = multi_interest_search(exact, queries, top_n);
  CHECK(r.ids.shape() == Shape{users, top_n});
  for (std::int64_t u = 0; u < users; ++u) {
    const std::int64_t active = u == 5 ? 2 : k_int;
    std::vector<std::pair<double, std::int32_t>> best;
    std::vector<double> mx(n, -1e300);
    for (std::int64_t i = 0; i < active; ++i) {
      auto s = brute_scores(items, queries.f32() + (u * k_int + i) * d, Metric::inner_product);
      for (std::int64_t t = 0; t < n; ++t) mx[t] = std::max(mx[t], s[t]);
    }
    for (std::int64_t t = 0; t < n; ++t) best.emplace_back(-mx[t], static_cast<std::int32_t>(t));
    std::sort(best.begin(), best.end());
    std::set<std::int32_t> seen;
    for (std::int64_t j = 0; j < top_n; ++j) {
      CHECK(seen.insert(r.ids.i32()[u * top_n + j]).second);
      CHECK(r.scores.f32()[u * top_n + j] == doctest::Approx(-best[j].first).epsilon(1e-5));
      CHECK(mx[r.ids.i32()[u * top_n + j]] == doctest::Approx(r.scores.f32()[u * top_n + j]).epsilon(1e-5));
    }
  }
  // Single-user path with an exclusion list.
  std::vector<float> s(top_n);
  std::vector<std::int32_t> ids(top_n);
  const std::int64_t drop = r.ids.i32()[0];
  multi_interest_search_one(exact, queries.f32(), k_int, top_n, s.data(), ids.data(), MergeOptions{}, &drop, 1);
  for (std::int64_t j = 0; j + 1 < top_n; ++j) CHECK(ids[j] == r.ids.i32()[j + 1]);

  // The same merge over HNSW, at an ef that makes this small index exact.
  HnswOptions opt;
  opt.ef = 400;
  HnswIndex hnsw(items, opt);
  SearchResult h = multi_interest_search(hnsw, queries, top_n);
  std::int64_t same = 0;
  for (std::int64_t i = 0; i < h.ids.numel(); ++i) same += h.ids.i32()[i] == r.ids.i32()[i];
  CHECK(same >= h.ids.numel() - 2);  // only float near-ties may swap

  CHECK_THROWS_WITH_AS(multi_interest_search(exact, Tensor::zeros({2, 3}), 5),
                       "multi_interest_search: queries must be a float32 [U, K, D] cpu tensor, got [2, 3] float32",
                       ShapeError);
}
