// Multi-interest retrieval on users with two tastes: a multi-interest model must retrieve from both
// tastes more often than a single-vector model trained the same way.
//
// Data: the synthetic generator with second_taste_share = 0.3: every user draws its items from two
// genres of its own, 70% from the first and 30% from the second (no successors, no popularity
// skew, so the tastes are the whole signal). A user's tastes are the two genres of its history;
// the second taste is the smaller one. Models: ComiRec-SA with 4 interests against the very same
// model with 1 interest (a single vector), same samples, same objective (full softmax, T 0.05),
// same epochs and seeds; no user features (the profiles carry no taste here).
// Measured over the top 50 of every test user (multi-interest: the merged top 50 of its 4
// interests): how many items of its second taste appear, and how often the held-out item is found
// when it belongs to the second taste. A single vector sits between the two tastes, nearer the
// first, and fills its list from the first; separate interests reach the second.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "rechub/data/samples.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/eval/evaluate.hpp"
#include "rechub/models/comirec.hpp"
#include "rechub/train/match_trainer.hpp"

using namespace rechub;

namespace {

struct TasteCoverage {
  double second_taste_items = 0;  // mean number of second-taste items in a user's top N
  double second_taste_hit = 0;    // Hit@N over users whose held-out item is of their second taste
  double first_taste_hit = 0;     // the same for the first taste
};

TasteCoverage coverage(MatchModel& m, const MatchData& md, const Interactions& data, std::int64_t N) {
  const std::vector<std::int32_t>& genre = data.item_features[0].codes;  // cate_id by item id
  std::map<std::int32_t, std::map<std::int32_t, int>> counts;          // user -> genre -> interactions
  for (std::size_t i = 0; i < data.user.size(); ++i) ++counts[data.user[i]][genre[data.item[i]]];
  Tensor items = embed_items(m, md.items), users = embed_users(m, md.test);
  const Tensor& ids = md.items[md.item_col];
  ExactIndex index(items, Metric::cosine, std::vector<std::int64_t>(ids.i32(), ids.i32() + ids.numel()));
  SearchResult r = users.ndim() == 3 ? multi_interest_search(index, users, N) : index.search(users, N);
  TasteCoverage c;
  int n_second = 0, n_first = 0;
  const std::int32_t* uid = md.test[md.user_col].i32();
  for (std::int64_t u = 0; u < md.test.rows(); ++u) {
    std::int32_t first = -1, second = -1;
    for (const auto& [g, n] : counts[uid[u]]) {
      auto& cu = counts[uid[u]];
      if (first < 0 || n > cu[first]) second = first, first = g;
      else if (second < 0 || n > cu[second]) second = g;
    }
    bool hit = false;
    for (std::int64_t j = 0; j < N; ++j) {
      const std::int32_t item = r.ids.i32()[u * N + j];
      c.second_taste_items += genre[static_cast<std::size_t>(item)] == second;
      hit = hit || item == md.test_targets[static_cast<std::size_t>(u)];
    }
    const std::int32_t target_genre = genre[static_cast<std::size_t>(md.test_targets[static_cast<std::size_t>(u)])];
    if (target_genre == second) ++n_second, c.second_taste_hit += hit;
    else if (target_genre == first) ++n_first, c.first_taste_hit += hit;
  }
  c.second_taste_items /= static_cast<double>(md.test.rows());
  c.second_taste_hit /= n_second;
  c.first_taste_hit /= n_first;
  return c;
}

}  // namespace

TEST_CASE("two-taste users: a multi-interest model retrieves from both tastes more than a single vector") {
  SyntheticOptions so;
  so.num_users = 500;
  so.num_items = 400;
  so.num_genres = 8;
  so.min_interactions = 30;
  so.max_interactions = 60;
  so.sequential_prob = 0.0;
  so.popularity_skew = 0.0;
  so.second_taste_share = 0.3;
  so.seed = 1;
  const Interactions data = generate_synthetic(so);
  MatchSampleOptions mo;
  mo.mode = 0;
  mo.neg_ratio = 0;
  mo.seq_max_len = 30;
  const MatchData md = generate_seq_feature_match(data, mo);
  const FeatureSchema schema = FeatureSchema::from(data);

  auto train = [&](int interests) {
    manual_seed(1);
    MultiInterestConfig cfg = ComirecSA::default_config(schema, 16, interests);
    cfg.user_features.clear();
    auto m = std::make_unique<ComirecSA>(cfg);
    TrainerOptions o;
    o.objective.mode = 2;
    o.objective.loss = "full";
    o.objective.temperature = 0.05f;
    o.objective.all_items = &md.items;
    o.objective.item_col = md.item_col;
    o.lr = 3e-3;
    o.weight_decay = 1e-6;
    o.epochs = 8;
    o.batch_size = 256;
    o.progress = 0;
    MatchTrainer t(*m, o);
    t.fit(md.train);
    return m;
  };
  auto multi = train(4);
  auto single = train(1);
  CHECK(multi->interest_num() == 4);
  CHECK(single->interest_num() == 1);
  const TasteCoverage cm = coverage(*multi, md, data, 50), cs = coverage(*single, md, data, 50);
  MESSAGE("second-taste items in the top 50: 4 interests " << cm.second_taste_items << ", 1 vector "
                                                           << cs.second_taste_items);
  MESSAGE("Hit@50 on second-taste targets: " << cm.second_taste_hit << " vs " << cs.second_taste_hit
                                             << "; on first-taste targets: " << cm.first_taste_hit << " vs "
                                             << cs.first_taste_hit);
  // Measured (seed 1): 17.2 vs 10.3 items, Hit@50 0.36 vs 0.24 on the second taste, 0.45 vs 0.46
  // on the first. Data seeds 2-5: 1.2x-1.7x the items, Hit@50 0.26-0.41 vs 0.17-0.26 on the second
  // taste, 0.39-0.45 vs 0.40-0.46 on the first. The bounds hold for all of them.
  CHECK(cm.second_taste_items > 1.15 * cs.second_taste_items);
  CHECK(cm.second_taste_hit > cs.second_taste_hit);
  CHECK(cm.first_taste_hit > 0.8 * cs.first_taste_hit);  // not bought by giving up the first taste
}
