// Multi-interest layers and models: capsule routing (MIND, ComiRec-DR), self-attentive interests
// (ComiRec-SA), SINE's extractor; gradient checks (routing's stop-gradient checked explicitly),
// golden numbers from Torch-RecHub, JSON round trips, shapes, padding, steady-state allocations.
//
// Golden numbers: computed once with torch 1.13 + torch_rechub 0.8.0 (CapsuleNetwork,
// MultiInterestSA, ComirecDR, ComirecSA, SINE) on inputs and parameters filled by
//   value(i) = scale * sin(0.37 i + 1.3 salt)   (double, then float32)
// with salt = (sum of the parameter name's characters) mod 97 for model parameters. MIND's
// random initial logits were passed in by replacing torch.randn with a function returning them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "gradcheck.hpp"
#include "rechub/data/batch_iterator.hpp"
#include "rechub/data/match_columns.hpp"
#include "rechub/data/samples.hpp"
#include "rechub/data/synthetic.hpp"
#include "rechub/models/registry.hpp"
#include "rechub/ops/score.hpp"
#include "rechub/train/match_trainer.hpp"

using namespace rechub;
using rechub::testing::check_gradients;
using rechub::testing::random_tensor;

namespace {

Tensor formula(const Shape& s, int salt, double scale = 0.5) {
  Tensor t = Tensor::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(scale * std::sin(0.37 * i + 1.3 * salt));
  return t;
}
int salt_of(const std::string& name) {
  int s = 0;
  for (char c : name) s += static_cast<unsigned char>(c);
  return s % 97;
}
void fill_by_name(Module& m) {
  for (auto& [n, p] : m.named_parameters()) p->value().copy_from(formula(p->shape(), salt_of(n)));
}
Tensor ids(const Shape& s, std::vector<std::int32_t> v) {
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  return Tensor::from_vector(s, v.data());
}
/// |got - want| <= atol + rtol |want| elementwise, printing the first mismatches.
void check_close(const Tensor& got, const float* want, std::int64_t n, double atol = 2e-6, double rtol = 2e-5) {
  REQUIRE(got.numel() == n);
  int bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = got.f32()[i], w = want[i];
    if (std::fabs(g - w) > atol + rtol * std::fabs(w)) {
      if (bad < 5) MESSAGE("element " << i << ": got " << g << " want " << w);
      ++bad;
    }
  }
  CHECK_MESSAGE(bad == 0, bad, " of ", n, " elements differ");
}
float max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  float m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.f32()[i] - b.f32()[i]));
  return m;
}

// ---- Torch-RecHub golden numbers (see the file comment) ------------------------------------------
const float kMindOut[24] = {0.0020235742f, -0.00071423361f, -0.0021530953f, 0.00032378524f, 0.0036150487f, 0.019072575f, -0.0001563658f, -0.019100929f, 0.0036457786f, 0.0030399745f, -0.0030944992f, -0.0036011422f, -0.00082996336f, 0.010933472f, 0.0028126745f, -0.010423413f, 0.002678694f, -0.064811312f, -0.014431788f, 0.062194206f, -0.00088964892f, -0.0030023276f, 0.00034519713f, 0.0030649272f};
const float kMindGradSeq[40] = {-0.0044217412f, -0.0049995985f, -0.0049007828f, -0.0041386681f, -0.0051590488f, -0.0053289523f, -0.004777608f, -0.0035796354f, -0.0054198266f, -0.0035835588f, -0.0012622722f, 0.0012298567f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.015470814f, 0.018085141f, 0.01825173f, 0.015948029f, 0.02144547f, 0.027936827f, 0.030647065f, 0.029209368f, 0.035029475f, 0.046970423f, 0.052554145f, 0.05102491f, 0.046523646f, 0.062158391f, 0.069380291f, 0.067211896f};
const float kMindGradW[16] = {-0.035955422f, -0.042216569f, -0.042763904f, -0.03752334f, -0.041350771f, -0.048751745f, -0.049554404f, -0.043650102f, -0.024944767f, -0.03044085f, -0.031816907f, -0.028886693f, 0.00027549363f, -0.003804316f, -0.00736923f, -0.0099367518f};
const float kDrOut[24] = {0.11866559f, 0.041361284f, -0.111165f, -0.061520305f, 0.10161408f, 0.080214947f, -0.087067641f, -0.096004069f, 0.068929695f, 0.10613241f, -0.049683303f, -0.11514216f, 0.023358315f, -0.15256424f, -0.051024824f, 0.14331125f, 0.076257363f, -0.12496756f, -0.098919399f, 0.10702919f, 0.11939429f, -0.084548958f, -0.13472667f, 0.060117174f};
const float kDrGradSeq[40] = {-0.031439416f, -0.040789265f, -0.044618491f, -0.042408805f, 0.0090811728f, -0.0022265145f, -0.013232848f, -0.022448184f, 0.043844834f, 0.03803144f, 0.027070664f, 0.012445996f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.029876646f, 0.021810601f, 0.0107926f, -0.0016861428f, 0.020166755f, 0.023396313f, 0.023459299f, 0.020347176f, -0.0025457796f, 0.007638976f, 0.016789833f, 0.023668271f, -0.026399713f, -0.020666376f, -0.012135942f, -0.0019629691f};
// kDrGradW: the first 48 of the 240 entries (position 0's maps) suffice with kDrGradSeq.
const float kDrGradW0[48] = {-0.048131365f, -0.049706098f, -0.044553351f, -0.03337051f, -0.031752396f, -0.032791253f, -0.029391969f, -0.022014618f, -0.005251341f, -0.0054231514f, -0.0048609641f, -0.0036408675f, 0.0063060587f, 0.0065123769f, 0.0058372756f, 0.004372126f, 0.010102689f, 0.010433223f, 0.0093516698f, 0.0070044119f, 0.024814593f, 0.025626462f, 0.022969911f, 0.01720449f, 0.044989225f, 0.046461154f, 0.041644789f, 0.031191995f, 0.049499914f, 0.051119424f, 0.045820162f, 0.034319352f, 0.046377737f, 0.047895096f, 0.042930085f, 0.032154683f, 0.042437084f, 0.043825515f, 0.03928237f, 0.02942254f, 0.016603285f, 0.017146502f, 0.015369021f, 0.011511414f, -0.0039177025f, -0.0040458799f, -0.0036264663f, -0.0027162274f};
const float kSaOut[24] = {0.045006812f, -0.027716234f, -0.096688002f, -0.1525735f, 0.053727925f, -0.018462941f, -0.088154905f, -0.14591551f, 0.064588904f, -0.0069195032f, -0.07749138f, -0.13757516f, -0.043421112f, -0.025609016f, -0.0043308698f, 0.017533436f, -0.03708072f, -0.02019541f, -0.00057671964f, 0.019119997f, -0.026429057f, -0.011106938f, 0.0057184733f, 0.021769892f};
const float kSaGradSeq[40] = {0.23431616f, 0.34599754f, 0.4111979f, 0.42105031f, 0.17235389f, 0.28888664f, 0.36639854f, 0.39436963f, 0.066634022f, 0.20849419f, 0.32182461f, 0.39137718f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, -0.31675526f, -0.25081638f, -0.1508147f, -0.030134819f, -0.36435521f, -0.32087627f, -0.23408116f, -0.11564565f, -0.266644f, -0.26063612f, -0.21942918f, -0.14872365f, -0.22282696f, -0.20415349f, -0.1577584f, -0.090013325f};
const float kSaGradW1[64] = {-0.12823367f, -0.032138497f, 0.082722068f, 0.12037205f, 0.046789989f, -0.11794239f, -0.18825367f, -0.027820364f, 0.12340647f, 0.090704478f, -0.032012284f, -0.11451136f, -0.097768292f, 0.032535687f, 0.18241362f, 0.12653837f, -0.14425707f, -0.051612392f, 0.076930851f, 0.13744068f, 0.065853313f, -0.12763222f, -0.2146301f, -0.037674241f, 0.13332373f, 0.11026125f, -0.017233197f, -0.12083137f, -0.12033054f, 0.026089046f, 0.20522206f, 0.14700899f, -0.14075592f, -0.064100794f, 0.060727425f, 0.13590738f, 0.076003678f, -0.12004764f, -0.21195738f, -0.042429101f, 0.12519625f, 0.11489472f, -0.00012168218f, -0.11079741f, -0.12660664f, 0.016111366f, 0.20025463f, 0.14758265f, -0.11820412f, -0.067913465f, 0.036304817f, 0.11597966f, 0.075867325f, -0.096215174f, -0.1805972f, -0.041441366f, 0.10012403f, 0.1039777f, 0.017006308f, -0.085767545f, -0.11574709f, 0.0039531142f, 0.1681837f, 0.12818165f};
const float kSaGradW2[48] = {-0.73345262f, 0.076527514f, 0.74902505f, -0.82202005f, 0.087321296f, 0.84047055f, -0.82628119f, 0.095894091f, 0.84683585f, -0.74978489f, 0.098654993f, 0.7709142f, -0.5779019f, 0.085683271f, 0.59627432f, -0.2970176f, 0.048607387f, 0.30789179f, 0.061362509f, -0.0031981294f, -0.060866248f, 0.4052431f, -0.0457188f, -0.41355234f, 0.65341586f, -0.069462471f, -0.6671719f, 0.79007453f, -0.082372256f, -0.80721211f, 0.83401573f, -0.092014916f, -0.85365236f, 0.79800898f, -0.098539457f, -0.81914324f, 0.67548609f, -0.094755933f, -0.69575769f, 0.44814998f, -0.06980779f, -0.46328488f, 0.11935935f, -0.022566939f, -0.12502816f, -0.24477325f, 0.027203849f, 0.24917673f};
const float kDrModelUser[24] = {0.66235512f, 0.5822897f, 0.4234142f, 0.20723146f, 0.74125803f, 0.57828718f, 0.33704808f, 0.050190922f, 0.80391437f, 0.53473997f, 0.19319126f, -0.17450517f, -0.18715756f, 0.18436915f, 0.53094238f, 0.80565524f, -0.014456223f, 0.29809117f, 0.57029337f, 0.76530921f, 0.10777428f, 0.37009925f, 0.58233309f, 0.71575093f};
const float kDrModelScores[6] = {0.99882841f, -0.92960191f, -0.98230195f, 0.59306312f, 0.98463595f, -0.90448922f};
const float kSaModelUser[24] = {0.37171289f, 0.50002265f, 0.56065691f, 0.54540873f, 0.36538064f, 0.49737293f, 0.56204838f, 0.55065298f, 0.35862994f, 0.49451926f, 0.56347793f, 0.55617249f, -0.32003438f, -0.47765216f, -0.57062149f, -0.58635944f, -0.34721181f, -0.48962632f, -0.56577194f, -0.56534243f, -0.36750415f, -0.49826476f, -0.56158733f, -0.54890138f};
const float kSaModelScores[6] = {0.53922355f, -0.23814887f, -0.72175968f, -0.7875396f, -0.99535424f, 0.98580927f};
const float kSineUser[8] = {0.14368352f, 0.073399603f, -0.0068186112f, -0.08611396f, -0.27012804f, -0.21807288f, -0.13650249f, -0.03645714f};

constexpr std::int64_t kB = 2, kL = 5, kD = 4, kK = 3;
Tensor golden_mask() { return ids({kB, kL}, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1}); }

/// Runs `layer(seq)` on the golden input, seeds backward with R, returns (out, dseq).
template <class F>
std::pair<Tensor, Tensor> run_golden(F&& layer) {
  Parameter seq(formula({kB, kL, kD}, 1));
  Var out = layer(seq.var());
  Tensor o = out.value().clone();
  tape().backward(out, formula({kB, kK, kD}, 4, 1.0));
  Tensor g = seq.grad().clone();
  end_step();
  return {o, g};
}

/// The golden models' batch: 2 rows, histories post- and pre-padded, 2 negatives each.
Batch golden_batch() {
  Batch b;
  b.set("user_id", ids({2}, {1, 3}));
  b.set("movie_id", ids({2}, {4, 8}));
  b.set("hist_movie_id", ids({2, 5}, {3, 7, 2, 0, 0, 0, 5, 9, 1, 4}));
  b.set("neg_items", ids({2, 2}, {2, 6, 7, 1}));
  return b;
}
/// Torch-RecHub's model features for the golden models; padding_idx -1 keeps the padding id's
/// embedding in the history as Torch-RecHub's ConcatPooling does.
MultiInterestConfig golden_config() {
  MultiInterestConfig c;
  c.user_features = {SparseFeature("user_id", 4, kD)};
  c.history_features = {SequenceFeature("hist_movie_id", 10, kD, "concat", "movie_id", -1)};
  c.item_features = {SparseFeature("movie_id", 10, kD)};
  c.neg_item_features = {SequenceFeature("neg_items", 10, kD, "concat", "movie_id")};
  c.interest_num = kK;
  c.max_length = kL;
  return c;
}
/// Torch-RecHub's forward scores: <u*, [v+, v-]> with u* the label-aware interest.
Tensor golden_scores(MatchModel& m, const Batch& b) {
  NoGrad ng;
  Var v = m.item_tower(b);
  Var all = concat({unsqueeze(v, 1), m.neg_item_tower(b)}, 1);
  Tensor s = group_dot(m.train_user_tower(b, v), all).value().clone();
  end_step();
  return s;
}

/// A small synthetic data set with list-wise samples (3 negatives), histories of `seq_len`.
struct Fixture {
  Interactions data;
  MatchData md;
  FeatureSchema schema;
  explicit Fixture(std::int64_t seq_len = 20, PadSide padding = PadSide::pre) {
    SyntheticOptions so;
    so.num_users = 120;
    so.num_items = 150;
    so.min_interactions = 15;
    so.max_interactions = 40;
    data = generate_synthetic(so);
    MatchSampleOptions mo;
    mo.mode = 2;
    mo.neg_ratio = 3;
    mo.sample_method = 1;
    mo.seq_max_len = seq_len;
    mo.padding = padding;
    md = generate_seq_feature_match(data, mo);
    schema = FeatureSchema::from(data);
  }
};

const std::vector<std::string> kModels{"mind", "comirec_dr", "comirec_sa", "sine"};

nlohmann::json small_config(const std::string& name, const FeatureSchema& s, int interests = 3) {
  nlohmann::json j = default_model_config(name, s, 8);
  if (name == "sine") {
    j["num_intention"] = interests;
    j["num_concept"] = 10;
  } else {
    j["interest_num"] = interests;
  }
  return j;
}

}  // namespace

// ---- capsule routing ---------------------------------------------------------------------------

TEST_CASE("capsule routing matches Torch-RecHub's CapsuleNetwork (MIND and ComiRec-DR), values and gradients") {
  SUBCASE("MIND: shared bilinear map, explicit random initial logits") {
    CapsuleNetwork::Options o;
    o.bilinear_type = 0;
    o.interest_num = kK;
    CapsuleNetwork cap(kD, kL, o);
    cap.weight().value().copy_from(formula({kD, kD}, 2));
    cap.zero_grad();
    const Tensor logits = formula({kB, kK, kL}, 3, 1.0);
    auto [out, dseq] = run_golden([&](const Var& s) { return cap.forward(s, golden_mask(), logits); });
    check_close(out, kMindOut, 24);
    check_close(dseq, kMindGradSeq, 40);
    check_close(cap.weight().grad(), kMindGradW, 16);
  }
  SUBCASE("ComiRec-DR: per-position maps, zero initial logits") {
    CapsuleNetwork::Options o;
    o.bilinear_type = 2;
    o.interest_num = kK;
    CapsuleNetwork cap(kD, kL, o);
    CHECK(cap.weight().shape() == Shape{1, kL, kK * kD, kD});
    cap.weight().value().copy_from(formula({1, kL, kK * kD, kD}, 5));
    cap.zero_grad();
    auto [out, dseq] = run_golden([&](const Var& s) { return cap.forward(s, golden_mask()); });
    check_close(out, kDrOut, 24);
    check_close(dseq, kDrGradSeq, 40);
    check_close(cap.weight().grad().reshape({kL, 48}).select(0), kDrGradW0, 48);
  }
}

TEST_CASE("capsule_squash: gradient check with the routing weights held fixed") {
  Rng rng(3);
  const Tensor mask = ids({2, 5}, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1});
  const Tensor logits = random_tensor({2, 3, 5}, rng);
  SUBCASE("shared hat [B, L, D]") {
    const Tensor hat = random_tensor({2, 5, 4}, rng);
    const Tensor w = routing_weights(hat, mask, 3, logits);
    check_gradients([&](const std::vector<Var>& v) { return capsule_squash(v[0], w); }, {hat});
  }
  SUBCASE("per-interest hat [B, L, K, D]") {
    const Tensor hat = random_tensor({2, 5, 3, 4}, rng);
    const Tensor w = routing_weights(hat, mask, 3);
    check_gradients([&](const std::vector<Var>& v) { return capsule_squash(v[0], w); }, {hat});
  }
}

TEST_CASE("capsule_routing: the gradient stops at the routing logits (all iterations but the last)") {
  Rng rng(5);
  const Tensor mask = ids({2, 5}, {1, 1, 1, 0, 0, 0, 1, 1, 1, 1});
  for (bool shared : {true, false}) {
    CAPTURE(shared);
    const Tensor logits = shared ? random_tensor({2, 3, 5}, rng) : Tensor();
    Parameter hat(shared ? random_tensor({2, 5, 4}, rng, -2, 2) : random_tensor({2, 5, 3, 4}, rng, -2, 2));
    const Tensor R = random_tensor({2, 3, 4}, rng);

    // The fused op's gradient ...
    Var out = capsule_routing(hat.var(), mask, 3, logits);
    const Tensor fused_out = out.value().clone();
    tape().backward(out, R);
    const Tensor fused = hat.grad().clone();
    end_step();
    // ... is exactly the last step's gradient with the final weights as constants,
    hat.zero_grad();
    const Tensor w = routing_weights(hat.value(), mask, 3, logits);
    Var last = capsule_squash(hat.var(), w);
    CHECK(max_abs_diff(last.value(), fused_out) <= 1e-6f);
    tape().backward(last, R);
    CHECK(max_abs_diff(hat.grad(), fused) <= 1e-7f);
    end_step();
    // ... and not the derivative of the whole routing: the weights do depend on hat.
    auto objective = [&] {
      NoGrad ng;
      Var o = capsule_routing(hat.var(), mask, 3, logits);
      double s = 0;
      for (std::int64_t i = 0; i < o.value().numel(); ++i) s += double(o.value().f32()[i]) * R.f32()[i];
      end_step();
      return s;
    };
    double worst = 0;
    for (std::int64_t i = 0; i < hat.numel(); ++i) {
      float& x = hat.value().f32()[i];
      const float x0 = x;
      x = x0 + 1e-2f;
      const double fp = objective();
      x = x0 - 1e-2f;
      const double fm = objective();
      x = x0;
      worst = std::max(worst, std::fabs((fp - fm) / 2e-2 - fused.f32()[i]));
    }
    INFO("largest |full derivative - stop-gradient derivative|: " << worst);
    CHECK(worst > 1e-2);
  }
}

TEST_CASE("capsule_routing_mapped (MIND's shared map, hat never formed) equals routing on linear(x, W)") {
  Rng rng(29);
  const Tensor mask = ids({3, 6}, {1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 5, 5});
  const Tensor logits = random_tensor({3, 4, 6}, rng);
  for (std::int64_t D : {16, 5}) {  // a compiled width and the generic path
    CAPTURE(D);
    Parameter x(random_tensor({3, 6, D}, rng, -1.5, 1.5)), w(random_tensor({D, D}, rng));
    const Tensor R = random_tensor({3, 4, D}, rng);
    Var a = capsule_routing_mapped(x.var(), w.var(), mask, 4, logits);
    const Tensor va = a.value().clone();
    tape().backward(a, R);
    const Tensor gx = x.grad().clone(), gw = w.grad().clone();
    end_step();
    x.zero_grad();
    w.zero_grad();
    Var b = capsule_routing(linear(x.var(), w.var()), mask, 4, logits);
    CHECK(max_abs_diff(b.value(), va) <= 1e-6f);
    tape().backward(b, R);
    CHECK(max_abs_diff(x.grad(), gx) <= 1e-5f);
    CHECK(max_abs_diff(w.grad(), gw) <= 1e-5f);
    end_step();
  }
}

TEST_CASE("capsule routing: one iteration is the masked softmax of the initial logits; padding gets no gradient") {
  Rng rng(7);
  const Tensor mask = ids({1, 4}, {0, 1, 1, 1});
  const Tensor logits = random_tensor({1, 2, 4}, rng);
  const Tensor w = routing_weights(random_tensor({1, 4, 3}, rng), mask, 2, logits, 1);
  for (std::int64_t k = 0; k < 2; ++k) {
    double z = 0;
    for (std::int64_t l = 0; l < 4; ++l) z += std::exp(double(logits.f32()[k * 4 + l]));
    CHECK(w.f32()[k * 4 + 0] == 0.0f);  // padding: zeroed, not renormalised away
    for (std::int64_t l = 1; l < 4; ++l)
      CHECK(w.f32()[k * 4 + l] == doctest::Approx(std::exp(double(logits.f32()[k * 4 + l])) / z).epsilon(1e-6));
  }
}

TEST_CASE("capsule routing is invariant to pre- versus post-padding when the logits move with the items") {
  Rng rng(9);
  const Tensor items = random_tensor({3, 4}, rng);  // 3 items, D = 4
  Tensor pre = Tensor::zeros({1, 6, 4}), post = Tensor::zeros({1, 6, 4});
  std::memcpy(pre.f32() + 3 * 4, items.f32(), 12 * sizeof(float));
  std::memcpy(post.f32(), items.f32(), 12 * sizeof(float));
  const Tensor mpre = ids({1, 6}, {0, 0, 0, 5, 6, 7}), mpost = ids({1, 6}, {5, 6, 7, 0, 0, 0});
  const Tensor lpost = random_tensor({1, 2, 6}, rng);
  Tensor lpre = Tensor::empty({1, 2, 6});
  for (int k = 0; k < 2; ++k)
    for (int l = 0; l < 6; ++l) lpre.f32()[k * 6 + (l + 3) % 6] = lpost.f32()[k * 6 + l];
  Tensor a = capsule_routing(constant(pre), mpre, 2, lpre).value().clone();
  Tensor b = capsule_routing(constant(post), mpost, 2, lpost).value().clone();
  end_step();
  CHECK(max_abs_diff(a, b) <= 1e-7f);
}

TEST_CASE("position_bilinear: gradient check; the first L of a longer weight are used") {
  Rng rng(11);
  const Tensor x = random_tensor({2, 4, 3}, rng), w = random_tensor({1, 6, 5, 3}, rng);
  check_gradients([](const std::vector<Var>& v) { return position_bilinear(v[0], v[1]); }, {x, w});
  Var y = position_bilinear(constant(x), constant(w));
  const float want = w.f32()[(2 * 5 + 4) * 3 + 0] * x.f32()[(1 * 4 + 2) * 3 + 0] +
                     w.f32()[(2 * 5 + 4) * 3 + 1] * x.f32()[(1 * 4 + 2) * 3 + 1] +
                     w.f32()[(2 * 5 + 4) * 3 + 2] * x.f32()[(1 * 4 + 2) * 3 + 2];
  CHECK(y.value().f32()[(1 * 4 + 2) * 5 + 4] == doctest::Approx(want).epsilon(1e-6));  // y[1, 2, 4] = W_2 x_12
  end_step();
  CHECK_THROWS_WITH_AS(position_bilinear(constant(random_tensor({2, 7, 3}, rng)), constant(w)),
                       "position_bilinear: x [2, 7, 3] does not match weight [1, 6, 5, 3] (expects last dim 3 and at "
                       "most 6 positions)",
                       ShapeError);
  end_step();
}

TEST_CASE("capsule routing rejects mismatched shapes with messages naming them") {
  Rng rng(1);
  CHECK_THROWS_WITH_AS(capsule_routing(constant(random_tensor({2, 5, 4}, rng)), ids({2, 4}, std::vector<std::int32_t>(8, 1)), 3),
                       "capsule_routing: mask [2, 4] does not match hat [2, 5, 4] (expects [B, L])", ShapeError);
  CHECK_THROWS_WITH_AS(capsule_routing(constant(random_tensor({2, 5, 2, 4}, rng)), ids({2, 5}, std::vector<std::int32_t>(10, 1)), 3),
                       "capsule_routing: hat [2, 5, 2, 4] must be [B, L, D] (shared) or [B, L, K, D] with K = 3",
                       ShapeError);
  CHECK_THROWS_WITH_AS(capsule_routing(constant(random_tensor({2, 5, 4}, rng)), ids({2, 5}, std::vector<std::int32_t>(10, 1)), 3,
                                       Tensor::zeros({2, 3, 4})),
                       "capsule_routing: init_logits [2, 3, 4] must be [B, K, L] = [2, 3, 5]", ShapeError);
  end_step();
}

// ---- self-attentive interests ------------------------------------------------------------------

TEST_CASE("MultiInterestSA matches Torch-RecHub, values and gradients") {
  MultiInterestSA sa(kD, kK);
  CHECK(sa.hidden_dim() == 4 * kD);
  for (auto& [n, p] : sa.named_parameters()) p->value().copy_from(formula(p->shape(), n == "W1" ? 6 : 7));
  sa.zero_grad();
  auto [out, dseq] = run_golden([&](const Var& s) { return sa.forward(s, golden_mask()); });
  check_close(out, kSaOut, 24);
  check_close(dseq, kSaGradSeq, 40);
  auto params = sa.named_parameters();
  check_close(params[0].second->grad(), kSaGradW1, 64);
  check_close(params[1].second->grad(), kSaGradW2, 48);
}

TEST_CASE("self_attentive_weights: gradient check, masks, a row without items, pre/post padding") {
  Rng rng(13);
  const Tensor mask = ids({3, 4}, {1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0});
  const Tensor x = random_tensor({3, 4, 3}, rng), w1 = random_tensor({3, 5}, rng), w2 = random_tensor({5, 2}, rng);
  check_gradients([&](const std::vector<Var>& v) { return self_attentive_weights(v[0], v[1], v[2], mask); },
                  {x, w1, w2});
  check_gradients([&](const std::vector<Var>& v) { return self_attentive_weights(v[0], v[1], v[2]); }, {x, w1, w2});
  Var a = self_attentive_weights(constant(x), constant(w1), constant(w2), mask);
  const float* pa = a.value().f32();
  for (int k = 0; k < 2; ++k) {
    CHECK(pa[(0 * 2 + k) * 4 + 0] + pa[(0 * 2 + k) * 4 + 1] == doctest::Approx(1.0f));
    CHECK(pa[(0 * 2 + k) * 4 + 2] == 0.0f);
    for (int l = 0; l < 4; ++l) CHECK(pa[(2 * 2 + k) * 4 + l] == 0.0f);  // no items: no attention
  }
  end_step();
  // From pre-activations: the same weights, and gradients through pre = x W1.
  check_gradients([&](const std::vector<Var>& v) { return self_attentive_weights_pre(v[0], v[1], mask); },
                  {random_tensor({3, 4, 5}, rng), w2});
  {
    Parameter px(x.clone()), pw1(w1.clone()), pw2(w2.clone()), qx(x.clone()), qw1(w1.clone()), qw2(w2.clone());
    const Tensor R = random_tensor({3, 2, 4}, rng);
    Var fused = self_attentive_weights(px.var(), pw1.var(), pw2.var(), mask);
    const Tensor vf = fused.value().clone();
    tape().backward(fused, R);
    end_step();
    Var pre = reshape(matmul(reshape(qx.var(), Shape{12, 3}), qw1.var()), Shape{3, 4, 5});
    Var split = self_attentive_weights_pre(pre, qw2.var(), mask);
    CHECK(max_abs_diff(vf, split.value()) <= 1e-6f);
    tape().backward(split, R);
    end_step();
    CHECK(max_abs_diff(px.grad(), qx.grad()) <= 1e-5f);
    CHECK(max_abs_diff(pw1.grad(), qw1.grad()) <= 1e-5f);
    CHECK(max_abs_diff(pw2.grad(), qw2.grad()) <= 1e-5f);
  }
  // The same items pre- and post-padded pool to the same interests.
  Tensor pre = Tensor::zeros({1, 4, 3}), post = Tensor::zeros({1, 4, 3});
  std::memcpy(pre.f32() + 6, x.f32(), 6 * sizeof(float));
  std::memcpy(post.f32(), x.f32(), 6 * sizeof(float));
  MultiInterestSA sa(3, 2);
  Tensor ip = sa.forward(constant(pre), ids({1, 4}, {0, 0, 4, 9})).value().clone();
  Tensor iq = sa.forward(constant(post), ids({1, 4}, {4, 9, 0, 0})).value().clone();
  end_step();
  CHECK(max_abs_diff(ip, iq) <= 1e-6f);
}

TEST_CASE("self_attentive_weights: heads above the fused limit take the GEMM path, same values and gradients") {
  Rng rng(17);
  const std::int64_t K = detail::kFusedAttentionHeads + 1;
  const Tensor mask = ids({2, 3}, {1, 0, 1, 0, 0, 0});
  const Tensor x = random_tensor({2, 3, 3}, rng), w1 = random_tensor({3, 4}, rng), w2 = random_tensor({4, K}, rng);
  check_gradients([&](const std::vector<Var>& v) { return self_attentive_weights(v[0], v[1], v[2], mask); },
                  {x, w1, w2});
  check_gradients([&](const std::vector<Var>& v) { return self_attentive_weights_pre(v[0], v[1], mask); },
                  {random_tensor({2, 3, 4}, rng), w2});
  // Head k of a K-head attention equals a one-head attention with W2's column k (fused path).
  Tensor wk = Tensor::empty({4, 1});
  for (int h = 0; h < 4; ++h) wk.f32()[h] = w2.f32()[h * K + 5];
  Var all = self_attentive_weights(constant(x), constant(w1), constant(w2), mask);
  Var one = self_attentive_weights(constant(x), constant(w1), constant(wk), mask);
  for (int b = 0; b < 2; ++b)
    for (int l = 0; l < 3; ++l)
      CHECK(all.value().f32()[(b * K + 5) * 3 + l] == doctest::Approx(one.value().f32()[b * 3 + l]).epsilon(1e-5));
  end_step();
}

TEST_CASE("self_attentive_weights_table: gradient check; equals the weights of pre = proj[ids] + pos") {
  Rng rng(31);
  const Tensor id = ids({3, 4}, {2, 5, 0, 0, 0, 1, 1, 4, 0, 0, 0, 0});  // a repeated id, a row without items
  for (std::int64_t K : {std::int64_t(2), detail::kFusedAttentionHeads + 1}) {
    CAPTURE(K);
    const Tensor proj = random_tensor({6, 5}, rng), pos = random_tensor({6, 5}, rng), w2 = random_tensor({5, K}, rng);
    check_gradients(
        [&](const std::vector<Var>& v) { return self_attentive_weights_table(v[0], v[1], id, v[2]); },
        {proj, pos, w2});
    Parameter a0(proj.clone()), a1(pos.clone()), a2(w2.clone()), b0(proj.clone()), b1(pos.clone()), b2(w2.clone());
    const Tensor R = random_tensor({3, K, 4}, rng);
    Var t = self_attentive_weights_table(a0.var(), a1.var(), id, a2.var());
    const Tensor vt = t.value().clone();
    tape().backward(t, R);
    end_step();
    Var pre = add(embedding_bag(b0.var(), id, BagMode::concat, 0), slice(b1.var(), 0, 0, 4));
    Var p = self_attentive_weights_pre(pre, b2.var(), id);
    CHECK(max_abs_diff(vt, p.value()) <= 1e-6f);
    tape().backward(p, R);
    end_step();
    CHECK(max_abs_diff(a0.grad(), b0.grad()) <= 1e-5f);
    CHECK(max_abs_diff(a1.grad(), b1.grad()) <= 1e-5f);
    CHECK(max_abs_diff(a2.grad(), b2.grad()) <= 1e-5f);
  }
  CHECK_THROWS_WITH_AS(self_attentive_weights_table(constant(Tensor::zeros({6, 5})), constant(Tensor::zeros({3, 5})),
                                                    id, constant(Tensor::zeros({5, 2}))),
                       "self_attentive_weights_table: proj [6, 5], pos [3, 5], ids [3, 4] and w2 [5, 2] do not fit "
                       "(expects [V, H], [>= L, H], [B, L], [H, K])",
                       ShapeError);
  CHECK_THROWS_WITH_AS(self_attentive_weights_table(constant(Tensor::zeros({4, 5})), constant(Tensor::zeros({4, 5})),
                                                    id, constant(Tensor::zeros({5, 2}))),
                       "self_attentive_weights_table: id 5 at position 1 is out of range for table [4, 5]", DataError);
  end_step();
}

// ---- label-aware selection ---------------------------------------------------------------------

TEST_CASE("label-aware selection: hard picks argmax <u_k, pos> (first on ties), soft is an attention; gradients") {
  Rng rng(17);
  const Tensor u = random_tensor({3, 4, 5}, rng), pos = random_tensor({3, 5}, rng);
  Var h = label_aware_select(constant(u), constant(pos), "hard", 1.0f);
  for (std::int64_t b = 0; b < 3; ++b) {
    std::int64_t best = 0;
    float bs = -1e30f;
    for (std::int64_t k = 0; k < 4; ++k) {
      float s = 0;
      for (int j = 0; j < 5; ++j) s += u.f32()[(b * 4 + k) * 5 + j] * pos.f32()[b * 5 + j];
      if (s > bs) bs = s, best = k;
    }
    for (int j = 0; j < 5; ++j) CHECK(h.value().f32()[b * 5 + j] == u.f32()[(b * 4 + best) * 5 + j]);
  }
  end_step();
  Tensor tie = Tensor::full({1, 2, 2}, 0.5f);
  Var t = label_aware_select(constant(tie), constant(Tensor::full({1, 2}, 1.0f)), "hard", 1.0f);
  CHECK(t.value().f32()[0] == 0.5f);
  end_step();
  check_gradients([](const std::vector<Var>& v) { return label_aware_select(v[0], v[1], "hard", 1.0f); }, {u, pos});
  check_gradients([](const std::vector<Var>& v) { return label_aware_select(v[0], v[1], "soft", 3.0f); }, {u, pos});
  CHECK_THROWS_WITH_AS(label_aware_select(constant(u), constant(pos), "medium", 1.0f),
                       "label_aware_select: mode 'medium' is not one of hard, soft", ConfigError);
  end_step();
}

// ---- SINE --------------------------------------------------------------------------------------

TEST_CASE("lp_normalize: torch's F.normalize for any order p, values and gradients") {
  Rng rng(31);
  const Tensor x = random_tensor({3, 5}, rng, 0.2f, 1.5f);  // away from 0, where |x|^(p-1) blows up for p < 1
  Tensor xs = x.clone();
  for (std::int64_t i = 0; i < xs.numel(); i += 2) xs.f32()[i] = -xs.f32()[i];  // mixed signs
  for (float p : {-1.0f, 2.0f, 3.0f}) {
    CAPTURE(p);
    Var y = lp_normalize(constant(xs), p);
    for (std::int64_t r = 0; r < 3; ++r) {
      double n = 0;
      for (int i = 0; i < 5; ++i) n += std::pow(std::fabs(double(xs.f32()[r * 5 + i])), double(p));
      n = std::pow(n, 1.0 / p);
      for (int i = 0; i < 5; ++i) CHECK(y.value().f32()[r * 5 + i] == doctest::Approx(xs.f32()[r * 5 + i] / n).epsilon(1e-5));
    }
    end_step();
    check_gradients([p](const std::vector<Var>& v) { return lp_normalize(v[0], p); }, {xs});
  }
  Var a = lp_normalize(constant(xs), 2.0f), b = l2_normalize(constant(xs));
  CHECK(max_abs_diff(a.value(), b.value()) <= 1e-6f);
  end_step();
}

/// A SINE extractor small enough for finite differences: D 3, H 4, 5 concepts, 2 intentions, L <= 5.
SineExtractor::Options tiny_sine_options() {
  SineExtractor::Options o;
  o.embedding_dim = 3;
  o.hidden_dim = 4;
  o.num_concept = 5;
  o.num_intention = 2;
  o.seq_max_len = 5;
  o.temperature = 0.5f;
  return o;
}

/// `first` (the items or the item table), then random weights in SineExtractor::Weights order.
std::vector<Tensor> tiny_sine_inputs(Tensor first, Rng& rng) {
  std::vector<Tensor> in{std::move(first)};
  in.push_back(random_tensor({5, 3}, rng, -2, 2));  // concepts: well separated top-k scores
  in.push_back(random_tensor({5, 3}, rng));         // positions (first 4 used)
  for (const Shape& sh : {Shape{3, 4}, Shape{4, 1}, Shape{3, 3}, Shape{3, 4}, Shape{4, 2}, Shape{3, 4}, Shape{4, 1}})
    in.push_back(random_tensor(sh, rng));
  return in;
}

TEST_CASE("SINE's extractor: gradient check of every weight and the input") {
  Rng rng(19);
  const SineExtractor::Options o = tiny_sine_options();
  const Tensor mask = ids({2, 4}, {3, 1, 0, 0, 0, 2, 5, 7});
  std::vector<Tensor> in = tiny_sine_inputs(random_tensor({2, 4, 3}, rng), rng);  // items first
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    check_gradients(
        [&](const std::vector<Var>& v) {
          SineExtractor::Weights w{v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]};
          SineExtractor::Output out = SineExtractor::compute(v[0], mask, w, o);
          return which == 0 ? out.interests : out.user;
        },
        in);
  }
}

TEST_CASE("SINE's extractor through the projected item table: gradient check, and equal to the direct path") {
  Rng rng(23);
  const SineExtractor::Options o = tiny_sine_options();
  const Tensor mask = ids({2, 4}, {3, 1, 0, 0, 0, 2, 5, 4});  // 8 positions, a 6-row table: projected
  std::vector<Tensor> in = tiny_sine_inputs(random_tensor({6, 3}, rng), rng);  // the item table (row 0 = padding)
  auto run = [&](const std::vector<Var>& v, bool through_table) {
    SineExtractor::Weights w{v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]};
    Var items = embedding_bag(v[0], mask, BagMode::concat, 0);
    return SineExtractor::compute(items, mask, w, o, through_table ? v[0] : Var());
  };
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    check_gradients(
        [&](const std::vector<Var>& v) {
          SineExtractor::Output out = run(v, true);
          return which == 0 ? out.interests : out.user;
        },
        in);
  }
  // Same values and gradients as the direct products (the projection is a reassociation).
  std::vector<Parameter> params;
  for (const Tensor& t : in) params.emplace_back(t.clone());
  std::vector<Var> vars;
  for (Parameter& p : params) vars.push_back(p.var());
  std::vector<Tensor> grads[2];
  Tensor values[2];
  for (int through_table = 0; through_table < 2; ++through_table) {
    for (Parameter& p : params) p.zero_grad();
    SineExtractor::Output out = run(vars, through_table == 1);
    Var both = concat({reshape(out.interests, Shape{2, 2 * 3}), out.user}, 1);
    values[through_table] = both.value().clone();
    tape().backward(both, formula({2, 9}, 5));
    for (Parameter& p : params) grads[through_table].push_back(p.grad().clone());
    end_step();
  }
  CHECK(max_abs_diff(values[0], values[1]) <= 1e-5f);
  for (std::size_t i = 0; i < params.size(); ++i) {
    CAPTURE(i);
    CHECK(max_abs_diff(grads[0][i], grads[1][i]) <= 1e-4f);
  }
}

TEST_CASE("SINE matches Torch-RecHub's user vector; the padding row's embedding does not matter") {
  SINEConfig c;
  c.num_items = 10;
  c.embedding_dim = kD;
  c.hidden_dim = 6;
  c.num_concept = 5;
  c.num_intention = 2;
  c.seq_max_len = kL;
  c.temperature = 0.1f;
  SINE m(c);
  fill_by_name(m);
  m.eval();
  const Batch b = golden_batch();
  Tensor v = m.user_embedding(b);
  CHECK(v.shape() == Shape{2, kD});
  check_close(v, kSineUser, 8, 1e-6, 1e-4);
  m.item_embedding().value().f32()[1] += 3.0f;  // row 0 = the padding id
  CHECK(max_abs_diff(m.user_embedding(b), v) == 0.0f);
}

// ---- models ------------------------------------------------------------------------------------

TEST_CASE("ComirecDR and ComirecSA match Torch-RecHub: user interests and label-aware scores") {
  const Batch b = golden_batch();
  for (int which = 0; which < 2; ++which) {
    CAPTURE(which);
    std::unique_ptr<MultiInterestModel> m;
    if (which == 0) m = std::make_unique<ComirecDR>(golden_config());
    else m = std::make_unique<ComirecSA>(golden_config());
    fill_by_name(*m);
    Tensor u = m->user_embedding(b);
    CHECK(u.shape() == Shape{2, kK, kD});
    check_close(u, which == 0 ? kDrModelUser : kSaModelUser, 24, 1e-6, 1e-4);
    check_close(golden_scores(*m, b), which == 0 ? kDrModelScores : kSaModelScores, 6, 1e-6, 1e-4);
  }
}

TEST_CASE("parameter names and shapes follow Torch-RecHub's state_dict") {
  Fixture f;
  auto names = [](const MatchModel& m) {
    std::vector<std::string> n;
    for (auto& [k, p] : m.named_parameters()) n.push_back(k + " " + p->shape().str());
    std::sort(n.begin(), n.end());
    return n;
  };
  const std::string V = std::to_string(f.schema.item_vocab);
  std::vector<std::string> tables;
  for (const auto& [n, vocab] : f.schema.user_profile)
    tables.push_back("embedding.embed_dict." + n + ".weight [" + std::to_string(vocab) + ", 16]");
  tables.push_back("embedding.embed_dict.user_id.weight [" + std::to_string(f.schema.user_vocab) + ", 16]");
  tables.push_back("embedding.embed_dict.movie_id.weight [" + V + ", 16]");
  tables.push_back("convert_user_weight [96, 16]");  // 5 user features + the interest, 16 wide each
  auto expect = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), tables.begin(), tables.end());
    std::sort(extra.begin(), extra.end());
    return extra;
  };
  CHECK(names(*make_model("mind", default_model_config("mind", f.schema, 16))) ==
        expect({"capsule.linear.weight [16, 16]"}));
  CHECK(names(*make_model("comirec_dr", default_model_config("comirec_dr", f.schema, 16))) ==
        expect({"capsule.w [1, 50, 64, 16]"}));
  CHECK(names(*make_model("comirec_sa", default_model_config("comirec_sa", f.schema, 16))) ==
        expect({"multi_interest_sa.W1 [16, 64]", "multi_interest_sa.W2 [64, 4]"}));
  std::vector<std::string> sine{"item_embedding.weight [" + V + ", 128]", "concept_embedding.weight [50, 128]",
                                "position_embedding.weight [20, 128]", "w_1 [128, 512]", "w_2 [512, 1]",
                                "w_3 [128, 128]", "w_k1 [128, 512]", "w_k2 [512, 4]", "w_4 [128, 512]", "w_5 [512, 1]"};
  std::sort(sine.begin(), sine.end());
  CHECK(names(*make_model("sine", default_model_config("sine", f.schema, 128))) == sine);
}

TEST_CASE("every multi-interest model: JSON round trip, shapes, interest_num") {
  Fixture f;
  BatchIterator it(f.md.train, 16, false);
  const Batch& b = *it.next();
  for (const auto& name : kModels) {
    CAPTURE(name);
    nlohmann::json cfg = small_config(name, f.schema, 3);
    auto m = make_model(name, cfg);
    CHECK(m->name() == name);
    // Round trip: config() rebuilds the same model; copied weights give the same vectors.
    nlohmann::json j = m->config();
    CHECK(j["model"] == name);
    auto again = make_model(name, j);
    CHECK(again->config() == j);
    auto pa = m->named_parameters(), pb = again->named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (std::size_t i = 0; i < pa.size(); ++i) {
      CHECK(pa[i].first == pb[i].first);
      pb[i].second->value().copy_from(pa[i].second->value());
    }
    CHECK(max_abs_diff(m->user_embedding(b), again->user_embedding(b)) == 0.0f);

    const bool sine = name == "sine";
    CHECK(m->interest_num() == (sine ? 1 : 3));
    Var u = m->user_tower(b);
    CHECK(u.shape() == (sine ? Shape{16, 8} : Shape{16, 3, 8}));
    Var v = m->item_tower(b);
    CHECK(v.shape() == Shape{16, 8});
    CHECK(m->neg_item_tower(b).shape() == Shape{16, 3, 8});
    CHECK(m->train_user_tower(b, v).shape() == Shape{16, 8});
    end_step();

    // interest_num is a config field; 1 gives a single [B, D] vector.
    nlohmann::json one = cfg;
    one[sine ? "num_intention" : "interest_num"] = 1;
    auto m1 = make_model(name, one);
    CHECK(m1->interest_num() == 1);
    CHECK(m1->user_tower(b).shape() == Shape{16, 8});
    end_step();
  }
  // SINE serving its interests instead of the aggregate.
  nlohmann::json cfg = small_config("sine", f.schema, 3);
  cfg["inference"] = "interests";
  auto s = make_model("sine", cfg);
  CHECK(s->interest_num() == 3);
  CHECK(s->user_tower(b).shape() == Shape{16, 3, 8});
  CHECK(s->train_user_tower(b, s->item_tower(b)).shape() == Shape{16, 8});
  end_step();
  // The typed configs round-trip through nlohmann on their own too.
  MultiInterestConfig mc = ComirecSA::default_config(f.schema, 8, 5);
  mc.label_aware = "soft";
  mc.pow_p = 4.0f;
  nlohmann::json mj = mc;
  CHECK(nlohmann::json(mj.get<MultiInterestConfig>()) == mj);
  SINEConfig sc = SINE::default_config(f.schema, 8, 3, 20);
  nlohmann::json sj = sc;
  CHECK(nlohmann::json(sj.get<SINEConfig>()) == sj);
}

TEST_CASE("post-padded histories work like pre-padded ones") {
  Fixture pre(20, PadSide::pre), post(20, PadSide::post);
  BatchIterator ia(pre.md.test, 32, false), ib(post.md.test, 32, false);
  const Batch &a = *ia.next(), &b = *ib.next();
  // ComiRec-SA (no position-dependent parameters) embeds both paddings to the same interests.
  manual_seed(3);
  auto m = make_model("comirec_sa", small_config("comirec_sa", pre.schema));
  CHECK(max_abs_diff(m->user_embedding(a), m->user_embedding(b)) <= 1e-6f);
  // Every model runs on both.
  for (const auto& name : kModels) {
    CAPTURE(name);
    auto mm = make_model(name, small_config(name, pre.schema));
    for (const Batch* x : {&a, &b}) {
      Tensor u = mm->user_embedding(*x);
      bool finite = true;
      for (std::int64_t i = 0; i < u.numel(); ++i) finite = finite && std::isfinite(u.f32()[i]);
      CHECK(finite);
    }
  }
}

TEST_CASE("MIND's random routing logits: fresh in training, a function of the history in eval mode") {
  CapsuleNetwork::Options o;
  o.bilinear_type = 0;
  o.interest_num = 3;
  CapsuleNetwork cap(4, 6, o);
  Rng rng(23);
  const Tensor seq = random_tensor({5, 6, 4}, rng, -2, 2);
  const Tensor mask = ids({5, 6}, {1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 3, 9, 9, 9, 9, 9, 9, 2, 1, 0, 0, 0, 0});
  auto run = [&](const Tensor& s, const Tensor& m) {
    Tensor t = cap.forward(constant(s), m).value().clone();
    end_step();
    return t;
  };
  cap.train();
  CHECK(max_abs_diff(run(seq, mask), run(seq, mask)) > 1e-2f);
  cap.eval();
  const Tensor e = run(seq, mask);
  CHECK(max_abs_diff(e, run(seq, mask)) == 0.0f);
  // Row 3 alone (another batch, another row index) routes exactly as inside the batch.
  const Tensor one = run(seq.slice(3, 4).clone(), mask.slice(3, 4).clone());
  CHECK(max_abs_diff(one, e.slice(3, 4)) <= 1e-6f);
  // The model: the same user embeds the same in any batch.
  Fixture f;
  auto m = make_model("mind", small_config("mind", f.schema));
  BatchIterator it(f.md.test, 40, false), it2(f.md.test, 7, false);
  Tensor a = m->user_embedding(*it.next()), b = m->user_embedding(*it2.next());
  CHECK(max_abs_diff(a.slice(0, 7), b) <= 1e-6f);
}

TEST_CASE("configuration errors name the problem") {
  Fixture f;
  nlohmann::json j = small_config("comirec_sa", f.schema);
  j["label_aware"] = "medium";
  CHECK_THROWS_WITH_AS(make_model("comirec_sa", j), "multi-interest model: label_aware 'medium' is not one of hard, soft",
                       ConfigError);
  j = small_config("mind", f.schema);
  j["history_features"][0]["pooling"] = "mean";
  CHECK_THROWS_WITH_AS(make_model("mind", j),
                       "multi-interest model: history feature 'hist_movie_id' must use pooling \"concat\", got \"mean\"",
                       ConfigError);
  j = small_config("sine", f.schema);
  j["num_heads"] = 2;
  CHECK_THROWS_WITH_AS(make_model("sine", j),
                       "sine: num_heads must be 1 (Torch-RecHub's aggregation only works with one head), got 2",
                       ConfigError);
  // Histories longer than the per-position parameters.
  j = small_config("comirec_dr", f.schema);
  j["max_length"] = 10;
  auto dr = make_model("comirec_dr", j);
  BatchIterator it(f.md.train, 4, false);
  CHECK_THROWS_WITH_AS(dr->user_tower(*it.next()),
                       "position_bilinear: x [4, 20, 8] does not match weight [1, 10, 24, 8] (expects last dim 8 and "
                       "at most 10 positions)",
                       ShapeError);
  end_step();
  j = small_config("sine", f.schema);
  j["seq_max_len"] = 10;
  auto sine = make_model("sine", j);
  CHECK_THROWS_WITH_AS(sine->user_tower(*it.next()), "SineExtractor: history length 20 exceeds seq_max_len 10",
                       ShapeError);
  end_step();
}

TEST_CASE("every objective trains every multi-interest model, and a steady-state step allocates nothing") {
  Fixture f;
  add_negative_attributes(f.md.train, f.data);
  for (const auto& name : kModels) {
    for (const std::string loss : {"softmax", "inbatch", "full"}) {
      CAPTURE(name);
      CAPTURE(loss);
      manual_seed(5);
      auto m = make_model(name, small_config(name, f.schema));
      TrainerOptions o;
      o.objective.mode = 2;
      o.objective.loss = loss;
      o.objective.temperature = 0.1f;
      o.objective.all_items = &f.md.items;
      o.objective.item_col = f.md.item_col;
      o.lr = 3e-3;
      o.epochs = 3;
      o.batch_size = 128;
      o.progress = 0;
      MatchTrainer t(*m, o);
      auto h = t.fit(f.md.train);
      CHECK(std::isfinite(h.back().loss));
      CHECK(h.back().loss < h.front().loss);
      // Steady state: the same batch shapes again allocate nothing on the heap (operator new).
      BatchIterator it(f.md.train, 128, true, 9, true);
      for (int i = 0; i < 3; ++i) t.step(*it.next());
      const long before = rechub::testing::allocations();
      for (int i = 0; i < 3; ++i) t.step(*it.next());
      CHECK(rechub::testing::allocations() - before == 0);
    }
  }
}
