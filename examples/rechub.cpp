// The `rechub` command-line tool: train, evaluate, embed and retrieve with recall models.
//
//   rechub train    --model dssm --data <synthetic | ml-1m dir | ml-100k dir | csv> --out DIR
//   rechub eval     --run DIR
//   rechub embed    --run DIR
//   rechub retrieve --run DIR --user RAW_ID --k 10
//   rechub train    --samples DIR     (a comparator sample directory: the arrays Torch-RecHub trains on)
// Every command that computes figures ends with ONE JSON line on stdout; progress goes to stderr.
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>
#include <rechub/rechub.hpp>

using namespace rechub;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void make_dir(const std::string& d) {
  std::error_code ec;
  std::filesystem::create_directories(d, ec);
  if (ec) detail::throw_error<Error>("cannot create directory ", d, ": ", ec.message());
}

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    detail::throw_error<ConfigError>(path, ": not valid JSON: ", e.what());
  }
}

void add_metrics(json& out, const MetricMap& m, const std::string& prefix = "") {
  for (const auto& [k, v] : m) out[prefix + k] = v;
}

std::string dataset_name(const Interactions& d, const std::string& spec) {
  return d.dataset.empty() ? spec : d.dataset;
}

/// Everything a run directory needs to be rebuilt: recipe, data spec, model config.
struct Experiment {
  Recipe recipe;
  std::string data_spec, schema;
  bool validation = false;  // hold out the second-to-last item instead of the last (tuning)
  Interactions data;
  MatchData samples;
  // Early stopping (recipe patience > 0): the model trains on every user's items but the last
  // two, stops on the second-to-last (valid_test), and is tested on the last with the full history.
  Dataset valid_test;
  std::vector<std::int32_t> valid_targets;
  FeatureSchema features;
  json model_config;
  std::unique_ptr<MatchModel> model;
  double load_seconds = 0, sample_seconds = 0;

  void load(const std::string& spec, const std::string& schema_path, bool validation_split) {
    data_spec = spec;
    schema = schema_path;
    validation = validation_split;
    auto t0 = std::chrono::steady_clock::now();
    ReadReport report;
    data = load_interactions(spec, schema_path, &report);
    if (validation) data = drop_last_interaction(data);
    load_seconds = seconds_since(t0);
    std::fprintf(stderr, "data: %s, %zu interactions, %d users, %d items (%.2f s)\n",
                 dataset_name(data, spec).c_str(), data.size(), data.num_users(), data.num_items(), load_seconds);
    t0 = std::chrono::steady_clock::now();
    if (recipe.trainer.patience > 0) {
      samples = prepare_samples(drop_last_interaction(data), recipe);
      valid_test = std::move(samples.test);
      valid_targets = std::move(samples.test_targets);
      MatchSampleOptions so = recipe.samples;
      so.mode = 0;
      so.neg_ratio = 0;
      MatchData full = generate_seq_feature_match(data, so);
      samples.test = std::move(full.test);
      samples.test_targets = std::move(full.test_targets);
      samples.test_users = std::move(full.test_users);
      samples.n_test = full.n_test;
      samples.item_counts = std::move(full.item_counts);
    } else {
      samples = prepare_samples(data, recipe);
    }
    recipe.trainer.objective.all_items = &samples.items;
    sample_seconds = seconds_since(t0);
    std::fprintf(stderr, "samples: %lld training rows, %lld test users, %lld cold users dropped (%.2f s)\n",
                 static_cast<long long>(samples.n_train_rows), static_cast<long long>(samples.n_test),
                 static_cast<long long>(samples.n_cold_users), sample_seconds);
    features = FeatureSchema::from(data);
  }
  void build_model(const json& config) {
    model_config = config;
    model = make_model(recipe.model, config);
  }
  json run_json() const {
    return {{"model", recipe.model}, {"recipe", recipe_json(recipe)}, {"model_config", model_config},
            {"data", {{"spec", data_spec}, {"schema", schema}, {"dataset", dataset_name(data, data_spec)},
              {"validation", validation}}}};
  }
};

/// Rebuilds an experiment from a run directory and loads its weights.
Experiment open_run(const std::string& dir) {
  json run = read_json(dir + "/run.json");
  Experiment ex;
  ex.recipe = make_recipe(run.at("model").get<std::string>(), run["recipe"].value("recipe", std::string("rechub")));
  apply_recipe_json(run["recipe"], ex.recipe);
  ex.load(run["data"]["spec"].get<std::string>(), run["data"].value("schema", std::string()),
          run["data"].value("validation", false));
  ex.build_model(run["model_config"]);
  load_checkpoint(dir + "/model.safetensors", *ex.model);
  return ex;
}

EvalOptions eval_options(const Experiment& ex) {
  EvalOptions opt;
  opt.metric = parse_metric(ex.recipe.metric);
  return opt;
}

MetricMap evaluate(Experiment& ex) {
  return evaluate_retrieval(*ex.model, ex.samples.test, ex.samples.test_targets, ex.samples.items,
                            ex.samples.item_col, eval_options(ex));
}

int cmd_train(const std::string& model, const std::string& data, const std::string& schema,
              const std::string& config, const std::string& recipe_name, int epochs, std::int64_t batch_size,
              double lr, const std::string& out, int threads, std::uint64_t seed, bool validation, int patience) {
  if (threads > 0) set_num_threads(threads);
  Experiment ex;
  ex.recipe = make_recipe(model, recipe_name);
  if (!config.empty()) apply_recipe_json(read_json(config), ex.recipe);
  if (epochs >= 0) ex.recipe.trainer.epochs = epochs;
  if (batch_size > 0) ex.recipe.trainer.batch_size = batch_size;
  if (lr > 0) ex.recipe.trainer.lr = lr;
  if (patience >= 0) ex.recipe.trainer.patience = patience;
  if (seed) {
    ex.recipe.trainer.seed = seed;
    ex.recipe.samples.seed = seed;
  }
  manual_seed(ex.recipe.trainer.seed);
  ex.load(data, schema, validation);
  ex.build_model(recipe_model_config(ex.recipe, ex.features));
  make_dir(out);
  TrainerOptions topt = ex.recipe.trainer;
  topt.log_path = out + "/train_log.jsonl";
  std::remove(topt.log_path.c_str());
  std::fprintf(stderr, "model %s (%lld parameters), recipe %s: %d epochs, batch %lld, lr %g\n", model.c_str(),
               static_cast<long long>(ex.model->num_parameters()), ex.recipe.name.c_str(), topt.epochs,
               static_cast<long long>(topt.batch_size), topt.lr);
  MatchTrainer trainer(*ex.model, topt);
  auto t0 = std::chrono::steady_clock::now();
  MatchTrainer::Validate validate;
  if (topt.patience > 0)
    validate = [&] {
      return evaluate_retrieval(*ex.model, ex.valid_test, ex.valid_targets, ex.samples.items, ex.samples.item_col,
                                eval_options(ex));
    };
  const auto& hist = trainer.fit(ex.samples.train, validate);
  const double train_seconds = seconds_since(t0);
  double epoch_seconds = 0;
  std::int64_t samples = 0;
  for (const auto& e : hist) {
    epoch_seconds += e.seconds;
    samples += e.samples;
  }

  json run = ex.run_json();
  save_checkpoint(out + "/model.safetensors", *ex.model, run);
  write_file_atomic(out + "/run.json", run.dump(2) + "\n");
  json ids = {{"users", ex.data.user_ids.raw_values()}, {"items", ex.data.item_ids.raw_values()},
              {"titles", ex.data.item_titles}};
  write_file_atomic(out + "/ids.json", ids.dump() + "\n");

  t0 = std::chrono::steady_clock::now();
  MetricMap m = evaluate(ex);
  const double eval_seconds = seconds_since(t0);
  MetricMap pop = popularity_metrics(ex.samples.item_counts, ex.samples.test_targets);
  json result = {{"model", model}, {"dataset", dataset_name(ex.data, data)}, {"recipe", ex.recipe.name},
                 {"split", validation ? "validation" : "test"}};
  add_metrics(result, m);
  result["epochs"] = hist.size();
  if (topt.patience > 0 && !hist.empty()) {
    // The weights kept are those of the best validation epoch (what the test metrics above use).
    const int best = trainer.best_epoch();
    result["best_epoch"] = best + 1;
    result["valid_" + topt.monitor] = hist[static_cast<std::size_t>(best)].validation.at(topt.monitor);
  }
  result["train_seconds"] = train_seconds;
  result["epoch_seconds"] = hist.empty() ? 0.0 : epoch_seconds / static_cast<double>(hist.size());
  result["samples_per_second"] = epoch_seconds > 0 ? static_cast<double>(samples) / epoch_seconds : 0.0;
  result["final_loss"] = hist.empty() ? 0.0 : hist.back().loss;
  result["n_train_rows"] = ex.samples.n_train_rows;
  result["n_test_users"] = ex.samples.n_test;
  result["load_seconds"] = ex.load_seconds;
  result["sample_seconds"] = ex.sample_seconds;
  result["eval_seconds"] = eval_seconds;
  result["popularity_Hit@10"] = pop["Hit@10"];
  result["popularity_Hit@100"] = pop["Hit@100"];
  result["threads"] = num_threads();
  result["run"] = out;
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

/// Trains on a comparator sample directory (the same arrays Torch-RecHub trains on) and reports.
int cmd_train_samples(const std::string& dir, int epochs, int threads, const std::string& out, std::uint64_t seed,
                      const std::string& config) {
  if (threads > 0) set_num_threads(threads);
  SampleDir sd = read_sample_dir(dir);
  if (!config.empty()) {
    // The samples are fixed by the directory; the trainer and the model may be changed.
    const json j = read_json(config);
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "trainer") {
        json t = sd.recipe.trainer;
        t.merge_patch(*it);
        sd.recipe.trainer = t.get<TrainerOptions>();
      } else if (it.key() == "model_overrides" || it.key() == "model_config") {
        sd.model_config.merge_patch(*it);
      } else {
        throw ConfigError("--samples: " + config + ": field '" + it.key() +
                          "' would change the sample directory's samples (only trainer, model_overrides)");
      }
    }
  }
  if (epochs >= 0) sd.recipe.trainer.epochs = epochs;
  if (seed) sd.recipe.trainer.seed = seed;
  manual_seed(sd.recipe.trainer.seed);
  auto model = make_model(sd.recipe.model, sd.model_config);
  TrainerOptions topt = sd.recipe.trainer;
  topt.objective.all_items = &sd.data.items;
  if (!out.empty()) {
    make_dir(out);
    topt.log_path = out + "/train_log.jsonl";
    std::remove(topt.log_path.c_str());
  }
  std::fprintf(stderr, "samples %s: model %s (%lld parameters), %lld rows, %d epochs, batch %lld, lr %g\n",
               dir.c_str(), sd.recipe.model.c_str(), static_cast<long long>(model->num_parameters()),
               static_cast<long long>(sd.data.train.rows()), topt.epochs, static_cast<long long>(topt.batch_size),
               topt.lr);
  MatchTrainer trainer(*model, topt);
  const auto& hist = trainer.fit(sd.data.train);
  json epoch_seconds = json::array(), epoch_loss = json::array();
  double total = 0;
  for (const auto& e : hist) {
    epoch_seconds.push_back(e.seconds);
    epoch_loss.push_back(e.loss);
    total += e.seconds;
  }
  auto t0 = std::chrono::steady_clock::now();
  MetricMap m = evaluate_retrieval(*model, sd.data.test, sd.data.test_targets, sd.data.items, sd.data.item_col);
  json result = {{"impl", "rechub"}, {"model", sd.recipe.model}, {"mode", sd.data.mode}, {"samples", dir},
                 {"epochs", hist.size()}, {"epoch_seconds", epoch_seconds}, {"epoch_loss", epoch_loss},
                 {"epoch_seconds_mean", hist.empty() ? 0.0 : total / static_cast<double>(hist.size())},
                 {"train_seconds", total},
                 {"samples_per_second", total > 0 ? static_cast<double>(sd.data.train.rows() * hist.size()) / total : 0.0},
                 {"eval_seconds", seconds_since(t0)}, {"parameters", model->num_parameters()},
                 {"n_train", sd.data.train.rows()}, {"n_test_users", sd.data.test.rows()},
                 {"batch_size", topt.batch_size}, {"lr", topt.lr}, {"threads", num_threads()}};
  add_metrics(result, m);
  if (!out.empty()) save_checkpoint(out + "/model.safetensors", *model, {{"samples", dir}, {"model_config", sd.model_config}});
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

int cmd_eval(const std::string& dir) {
  Experiment ex = open_run(dir);
  auto t0 = std::chrono::steady_clock::now();
  MetricMap m = evaluate(ex);
  json result = {{"model", ex.recipe.model}, {"dataset", dataset_name(ex.data, ex.data_spec)}, {"run", dir}};
  add_metrics(result, m);
  MetricMap pop = popularity_metrics(ex.samples.item_counts, ex.samples.test_targets);
  add_metrics(result, pop, "popularity_");
  result["eval_seconds"] = seconds_since(t0);
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

int cmd_embed(const std::string& dir, const std::string& out_dir) {
  Experiment ex = open_run(dir);
  const std::string out = out_dir.empty() ? dir + "/embeddings" : out_dir;
  make_dir(out);
  auto t0 = std::chrono::steady_clock::now();
  // Users are embedded from their full history (what a service would send), items from their profile.
  Dataset users;
  std::vector<Tensor> rows;
  Tensor user_vecs;
  for (std::int32_t u = 1; u <= ex.data.num_users(); ++u) {
    Dataset req = user_request(ex.data, u, ex.recipe.samples);
    Tensor e = ex.model->user_embedding(req);  // [1, D], or [1, K, D] for a multi-interest model
    if (!user_vecs.defined()) {
      Shape shape = e.shape();
      shape[0] = ex.data.num_users();
      user_vecs = Tensor::empty(shape);
    }
    std::copy(e.f32(), e.f32() + e.numel(), user_vecs.f32() + static_cast<std::int64_t>(u - 1) * e.numel());
  }
  Tensor item_vecs = embed_items(*ex.model, ex.samples.items);
  write_npy(out + "/user_embeddings.npy", user_vecs);
  write_npy(out + "/item_embeddings.npy", item_vecs);
  json ids = {{"users", ex.data.user_ids.raw_values()}, {"items", ex.data.item_ids.raw_values()}};
  write_file_atomic(out + "/ids.json", ids.dump() + "\n");
  json result = {{"model", ex.recipe.model}, {"users", user_vecs.dim(0)}, {"items", item_vecs.dim(0)},
                 {"dim", item_vecs.dim(1)}, {"out", out}, {"seconds", seconds_since(t0)}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

int cmd_retrieve(const std::string& dir, const std::string& raw_user, int k, bool include_seen) {
  Experiment ex = open_run(dir);
  const std::int32_t user = ex.data.user_ids.encode(raw_user, "user");
  Tensor item_vecs = embed_items(*ex.model, ex.samples.items);
  const Tensor& ids = ex.samples.items[ex.samples.item_col];
  std::vector<std::int64_t> labels(ids.i32(), ids.i32() + ids.numel());
  ExactIndex index(item_vecs, parse_metric(ex.recipe.metric), labels);
  auto t0 = std::chrono::steady_clock::now();
  Dataset req = user_request(ex.data, user, ex.recipe.samples);
  Tensor u = ex.model->user_embedding(req);
  std::vector<std::int64_t> seen;
  if (!include_seen)
    for (auto it : user_items(ex.data, user)) seen.push_back(it);
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  const std::int64_t kk = std::min<std::int64_t>(k, index.size() - static_cast<std::int64_t>(seen.size()));
  std::vector<float> scores(static_cast<std::size_t>(kk));
  std::vector<std::int64_t> top(static_cast<std::size_t>(kk));
  if (u.ndim() == 3)  // K interests: query each, merge by best score
    multi_interest_search_one(index, u.f32(), u.dim(1), kk, scores.data(), top.data(), MergeOptions{}, seen.data(),
                              static_cast<std::int64_t>(seen.size()));
  else
    index.search_one(u.f32(), kk, scores.data(), top.data(), seen.data(), static_cast<std::int64_t>(seen.size()));
  const double latency_us = seconds_since(t0) * 1e6;
  json items = json::array();
  for (std::int64_t i = 0; i < kk; ++i) {
    const std::int32_t code = static_cast<std::int32_t>(top[static_cast<std::size_t>(i)]);
    const std::string& raw = ex.data.item_ids.decode(code);
    const std::string title =
        static_cast<std::size_t>(code) < ex.data.item_titles.size() ? ex.data.item_titles[static_cast<std::size_t>(code)] : "";
    std::fprintf(stderr, "%3lld. %-8s %.4f  %s\n", static_cast<long long>(i + 1), raw.c_str(),
                 scores[static_cast<std::size_t>(i)], title.c_str());
    items.push_back({{"item", raw}, {"title", title}, {"score", scores[static_cast<std::size_t>(i)]}});
  }
  json result = {{"model", ex.recipe.model}, {"user", raw_user}, {"k", kk}, {"items", items},
                 {"history_length", user_items(ex.data, user).size()}, {"latency_us", latency_us}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rechub: train, evaluate and serve recall (matching) models"};
  app.require_subcommand(1);

  std::string model = "dssm", data = "synthetic", schema, config, recipe = "rechub", out, run, user;
  int epochs = -1, threads = 0, k = 10;
  std::int64_t batch_size = 0;
  double lr = 0;
  std::uint64_t seed = 0;
  bool include_seen = false, validation = false;

  auto* train = app.add_subcommand("train", "train a model, save it to --out and report its test metrics");
  std::string model_list;
  for (const auto& n : model_names()) model_list += (model_list.empty() ? "" : ", ") + n;
  train->add_option("--model", model, model_list)->capture_default_str();
  train->add_option("--data", data, "synthetic | MovieLens-1M dir | MovieLens-100K dir | CSV file")
      ->capture_default_str();
  train->add_option("--schema", schema, "JSON schema for a generic interactions CSV");
  train->add_option("--config", config, "JSON overrides: {\"samples\":{...},\"trainer\":{...},\"embed_dim\":N}");
  train->add_option("--recipe", recipe, "rechub (our tuned defaults) or torch-rechub (its examples' settings)")
      ->capture_default_str();
  train->add_option("--epochs", epochs, "override the recipe's epochs");
  train->add_option("--batch-size", batch_size, "override the recipe's batch size");
  train->add_option("--lr", lr, "override the recipe's learning rate");
  int patience = -1;
  train->add_option("--patience", patience,
                    "early stopping: epochs without a better validation NDCG@10 (second-to-last items); 0 = off");
  train->add_option("--seed", seed, "seed for sampling, initialisation and shuffling (default 2022)");
  train->add_option("--threads", threads, "OpenMP threads (default: OMP_NUM_THREADS or all cores)");
  std::string samples;
  train->add_option("--samples", samples,
                    "train on a comparator sample directory (benchmarks/torch_rechub/README.md) instead of --data");
  train->add_option("--out", out, "run directory to write (required unless --samples)");
  train->add_flag("--validation", validation,
                  "tuning protocol: drop each user's last item, evaluate on the second-to-last");

  auto* ev = app.add_subcommand("eval", "evaluate a trained run on its test users (full item ranking)");
  ev->add_option("--run", run, "run directory written by `rechub train`")->required();

  std::string embed_out;
  auto* emb = app.add_subcommand("embed", "write every user's and item's embedding as .npy with raw ids");
  emb->add_option("--run", run, "run directory")->required();
  emb->add_option("--out", embed_out, "output directory (default RUN/embeddings)");

  auto* ret = app.add_subcommand("retrieve", "top-k items for one user, raw ids with titles and scores");
  ret->add_option("--run", run, "run directory")->required();
  ret->add_option("--user", user, "raw user id, as in the data")->required();
  ret->add_option("--k", k, "how many items")->capture_default_str();
  ret->add_flag("--include-seen", include_seen, "also return items the user already interacted with");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*train && !samples.empty()) return cmd_train_samples(samples, epochs, threads, out, seed, config);
    if (*train && out.empty()) throw ConfigError("train: --out is required");
    if (*train) return cmd_train(model, data, schema, config, recipe, epochs, batch_size, lr, out, threads, seed,
                                 validation, patience);
    if (*ev) return cmd_eval(run);
    if (*emb) return cmd_embed(run, embed_out);
    if (*ret) return cmd_retrieve(run, user, k, include_seen);
  } catch (const rechub::Error& e) {
    std::fprintf(stderr, "rechub: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rechub: unexpected error: %s\n", e.what());
    return 3;
  }
  return 0;
}
