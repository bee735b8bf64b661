// "No heap allocation in a steady-state training step" (DESIGN.md, performance principles),
// measured on the whole MatchTrainer::step of a DSSM: towers, objective, backward, Adam, end_step.
//
// Every global operator new is replaced by a counting version, and on glibc the malloc family
// too (malloc, calloc, realloc, free, aligned_alloc, posix_memalign, memalign, valloc, pvalloc,
// forwarding to glibc's __libc_* entry points): Tensor storage and the arena's blocks come from
// aligned_alloc, which operator new never sees. Counters are global atomics, so allocations on
// OpenMP worker threads count too.
//
// To find an allocation that this test reports, run it under gdb with RECHUB_ALLOC_TRAP=1: the
// first allocation inside a measured window then raises SIGTRAP, and `bt` shows who made it.
//
// AddressSanitizer replaces the allocator itself, so under ASan the replacements are compiled out
// and the test only prints a message.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#include "rechub/data/batch_iterator.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/models/dssm.hpp"
#include "rechub/models/feature_schema.hpp"
#include "rechub/train/match_trainer.hpp"
#include "rechub/train/recipes.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define RECHUB_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RECHUB_TEST_ASAN 1
#endif
#endif

namespace {
std::atomic<long> g_new{0};     // operator new calls
std::atomic<long> g_malloc{0};  // malloc-family calls (glibc only)
std::atomic<bool> g_trap{false};  // raise SIGTRAP on the next allocation (debugging aid)

inline void on_alloc(std::atomic<long>& counter) {
  counter.fetch_add(1, std::memory_order_relaxed);
  if (g_trap.load(std::memory_order_relaxed)) __builtin_trap();
}
}  // namespace

#ifndef RECHUB_TEST_ASAN

#if defined(__GLIBC__)
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* __libc_valloc(std::size_t);
void* __libc_pvalloc(std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
  on_alloc(g_malloc);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t s) {
  on_alloc(g_malloc);
  return __libc_calloc(n, s);
}
void* realloc(void* p, std::size_t n) {
  on_alloc(g_malloc);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* aligned_alloc(std::size_t a, std::size_t n) {
  on_alloc(g_malloc);
  return __libc_memalign(a, n);
}
void* memalign(std::size_t a, std::size_t n) {
  on_alloc(g_malloc);
  return __libc_memalign(a, n);
}
int posix_memalign(void** out, std::size_t a, std::size_t n) {
  on_alloc(g_malloc);
  void* p = __libc_memalign(a, n);
  if (!p) return 12;  // ENOMEM
  *out = p;
  return 0;
}
void* valloc(std::size_t n) {
  on_alloc(g_malloc);
  return __libc_valloc(n);
}
void* pvalloc(std::size_t n) {
  on_alloc(g_malloc);
  return __libc_pvalloc(n);
}
}  // extern "C"
constexpr bool kCountsMalloc = true;
#else
constexpr bool kCountsMalloc = false;
#endif

void* operator new(std::size_t n) {
  on_alloc(g_new);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  on_alloc(g_new);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
// GCC cannot see that our operator new is malloc, and warns about the matching free.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // RECHUB_TEST_ASAN

using namespace rechub;

#ifdef RECHUB_TEST_ASAN

TEST_CASE("steady-state training steps allocate nothing (skipped under AddressSanitizer)") {
  MESSAGE("skipped: AddressSanitizer replaces the allocator, so allocations cannot be counted here");
}

#else

namespace {

struct StepCounts {
  long news = 0, mallocs = 0;
  double last_loss = 0;
};

/// A small synthetic data set: 120 users x 200 items, 20-40 interactions each.
const Interactions& small_data() {
  static const Interactions data = [] {
    SyntheticOptions o;
    o.num_users = 120;
    o.num_items = 200;
    o.min_interactions = 20;
    o.max_interactions = 40;
    o.seed = 7;
    return generate_synthetic(o);
  }();
  return data;
}

/// Trains a DSSM under `recipe` for `warmup` steps, then counts allocations over `measured` steps.
/// Batches come from a BatchIterator with drop_last, so every step sees the same shapes; the
/// iterator restarts (a new shuffled epoch) when it runs out, inside the measured window too.
StepCounts count_step_allocations(Recipe recipe, std::int64_t batch_size, int warmup, int measured) {
  const Interactions& data = small_data();
  recipe.trainer.batch_size = batch_size;
  recipe.trainer.progress = 0;
  MatchData md = prepare_samples(data, recipe);
  if (recipe.trainer.objective.effective_loss() == "full") recipe.trainer.objective.all_items = &md.items;
  const FeatureSchema schema = FeatureSchema::from(data);
  manual_seed(11);
  DSSM model(DSSM::default_config(schema, 16, recipe.samples.mode != 1));
  MatchTrainer trainer(model, recipe.trainer);
  model.train();
  BatchIterator it(md.train, batch_size, true, 5, /*drop_last=*/true);
  REQUIRE(it.num_batches() >= 2);
  std::int64_t epoch = 0;
  auto next_batch = [&]() -> const Batch* {
    const Batch* b = it.next();
    if (!b) {
      it.start_epoch(++epoch);
      b = it.next();
    }
    return b;
  };
  StepCounts c;
  for (int i = 0; i < warmup; ++i) c.last_loss = trainer.step(*next_batch());
  const bool trap = std::getenv("RECHUB_ALLOC_TRAP") != nullptr;
  const long n0 = g_new.load(), m0 = g_malloc.load();
  for (int i = 0; i < measured; ++i) {
    const Batch* b = next_batch();
    if (trap) g_trap.store(true);
    c.last_loss = trainer.step(*b);
    g_trap.store(false);
  }
  c.news = g_new.load() - n0;
  c.mallocs = g_malloc.load() - m0;
  return c;
}

/// rechub's recipe with in-batch negatives instead of its full softmax.
Recipe inbatch_recipe() {
  Recipe r = rechub_recipe("dssm");
  r.trainer.objective.loss = "";
  r.trainer.objective.in_batch_neg = true;
  return r;
}

Recipe listwise_recipe() {
  Recipe r = torch_rechub_recipe("dssm");
  r.samples.mode = 2;
  r.samples.neg_ratio = 3;
  r.trainer.objective = Objective{};
  r.trainer.objective.mode = 2;
  r.trainer.lr = 1e-3;
  return r;
}

}  // namespace

TEST_CASE("the allocation counters see operator new and the malloc family") {
  const long n0 = g_new.load(), m0 = g_malloc.load();
  auto* p = new std::string(100, 'x');  // heap buffer beyond the small-string capacity
  delete p;
  CHECK(g_new.load() - n0 >= 2);
  Tensor t = Tensor::empty({1000});  // aligned_alloc storage (+ make_shared's control block)
  if (kCountsMalloc) CHECK(g_malloc.load() - m0 >= 1);
  else MESSAGE("malloc family not counted on this C library; operator new only");
}

TEST_CASE("a steady-state DSSM training step performs no heap allocation") {
  // ctest runs this with OMP_NUM_THREADS=2: the batches of 512 cross the parallel_for
  // thresholds, so OpenMP regions are measured too.
  if (!kCountsMalloc) MESSAGE("glibc not detected: counting operator new only");

  SUBCASE("list-wise: mode 2 softmax over the positive and 3 sampled neg_items") {
    Recipe r = listwise_recipe();
    for (std::int64_t bs : {64, 512}) {
      CAPTURE(bs);
      StepCounts c = count_step_allocations(r, bs, 4, 6);
      CHECK(c.news == 0);
      CHECK(c.mallocs == 0);
      CHECK(std::isfinite(c.last_loss));
    }
  }
  SUBCASE("point-wise: mode 0 BCE on labelled rows") {
    Recipe r = torch_rechub_recipe("dssm");  // mode 0, neg_ratio 3, BCE
    r.trainer.lr = 1e-3;
    for (std::int64_t bs : {64, 512}) {
      CAPTURE(bs);
      StepCounts c = count_step_allocations(r, bs, 4, 6);
      CHECK(c.news == 0);
      CHECK(c.mallocs == 0);
      CHECK(std::isfinite(c.last_loss));
    }
  }
  SUBCASE("pair-wise: mode 1 BPR against one sampled negative") {
    Recipe r = torch_rechub_recipe("dssm");
    r.samples.mode = 1;
    r.trainer.objective = Objective{};
    r.trainer.objective.mode = 1;
    StepCounts c = count_step_allocations(r, 128, 4, 6);
    CHECK(c.news == 0);
    CHECK(c.mallocs == 0);
  }
  SUBCASE("in-batch softmax, full B x B and k = 8 hard negatives") {
    Recipe r = inbatch_recipe();
    for (std::int64_t bs : {64, 512}) {
      CAPTURE(bs);
      StepCounts c = count_step_allocations(r, bs, 4, 6);
      CHECK(c.news == 0);
      CHECK(c.mallocs == 0);
      CHECK(std::isfinite(c.last_loss));
    }
    r.trainer.objective.in_batch_neg_ratio = 8;
    r.trainer.objective.hard_negatives = true;
    StepCounts c = count_step_allocations(r, 128, 4, 6);
    CHECK(c.news == 0);
    CHECK(c.mallocs == 0);
  }
  SUBCASE("full softmax over the whole catalogue (rechub's recipe)") {
    Recipe r = rechub_recipe("dssm");
    REQUIRE(r.trainer.objective.effective_loss() == "full");
    for (std::int64_t bs : {64, 512}) {
      CAPTURE(bs);
      StepCounts c = count_step_allocations(r, bs, 4, 6);
      CHECK(c.news == 0);
      CHECK(c.mallocs == 0);
      CHECK(std::isfinite(c.last_loss));
    }
  }
  SUBCASE("in-batch softmax with log-Q correction, lazy Adam on the tables and gradient clipping") {
    Recipe r = inbatch_recipe();
    r.trainer.objective.log_q_correction = true;
    r.trainer.lazy_embeddings = true;
    r.trainer.clip_norm = 1.0f;
    StepCounts c = count_step_allocations(r, 128, 4, 8);
    CHECK(c.news == 0);
    CHECK(c.mallocs == 0);
  }
}

#endif  // RECHUB_TEST_ASAN
