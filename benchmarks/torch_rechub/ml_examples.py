"""Torch-RecHub's own MovieLens matching pipeline, written out as a rechub sample directory.

Mirrors examples/matching/run_ml_<model>.py of Torch-RecHub (the settings table below; the anchor
shared/anchors/torch-rechub-ml100k.md lists the same values): the merged MovieLens frame, cate_id =
first genre, LabelEncoder(+1) on the sparse columns, torch_rechub.utils.match.generate_seq_feature_match
and gen_model_input with the example's arguments. The library functions are called, not re-implemented,
so the samples are Torch-RecHub's own; only the CSV-building step (ML-100K / ML-1M files -> the
examples' ml-1m.csv layout) and the examples' 4-line get_item_sample_weight live here.
"""
import os
import random
import time
from collections import Counter

import numpy as np
import pandas as pd

import sample_dir

USER_COLS = ["user_id", "gender", "age", "occupation", "zip"]
SPARSE_COLS = ["user_id", "movie_id", "gender", "age", "occupation", "zip", "cate_id"]
USER_COL, ITEM_COL = "user_id", "movie_id"
SEQ_MAX_LEN = 50
EMBED_DIM = 16

# run_ml_<model>.py defaults. gen_mode/neg_ratio go to generate_seq_feature_match (sample_method=1 everywhere,
# min_item=0); mode is MatchTrainer's; padding/truncating go to gen_model_input.
EXAMPLES = {
    "dssm": dict(script="run_ml_dssm.py", gen_mode=0, neg_ratio=3, mode=0, lr=1e-4, batch_size=4096, epochs=10,
                 dims=[256, 128, 64], item_dims=[256, 128, 64], activation="prelu", padding="pre"),
    "youtube_dnn": dict(script="run_ml_youtube_dnn.py", gen_mode=2, neg_ratio=3, mode=2, lr=1e-4, batch_size=2048,
                        epochs=10, dims=[128, 64, 16], padding="pre"),
    "youtube_sbc": dict(script="run_ml_youtube_sbc.py", gen_mode=0, neg_ratio=0, mode=2, lr=1e-3, batch_size=512,
                        epochs=8, dims=[128, 64, 16], item_dims=[128, 64, 16], n_neg=3, padding="pre"),
    "facebook_dssm": dict(script="run_ml_facebook_dssm.py", gen_mode=1, neg_ratio=3, mode=1, lr=1e-4,
                          batch_size=2048, epochs=10, dims=[256, 128, 64, 32], item_dims=[256, 128, 64, 32],
                          padding="pre"),
    "gru4rec": dict(script="run_ml_gru4rec.py", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3, batch_size=256, epochs=10,
                    dims=[128, 64, 16], padding="post"),
    "mind": dict(script="run_ml_mind.py", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3, batch_size=256, epochs=10,
                 interest_num=4, padding="post"),
}


def load_movielens(path):
    """MovieLens-100K (u.data/u.user/u.item/u.genre) or ML-1M (ratings/users/movies.dat) as the examples'
    merged frame: user_id, movie_id, rating, timestamp, title, genres, gender, age, occupation, zip
    (rows in ratings-file order; genres '|'-joined; zip a string; age the raw value)."""
    if os.path.exists(os.path.join(path, "u.data")):
        ratings = pd.read_csv(os.path.join(path, "u.data"), sep="\t", header=None,
                              names=["user_id", "movie_id", "rating", "timestamp"])
        users = pd.read_csv(os.path.join(path, "u.user"), sep="|", header=None,
                            names=["user_id", "age", "gender", "occupation", "zip"], dtype={"zip": str})
        genre_names = [l.split("|")[0] for l in open(os.path.join(path, "u.genre"), encoding="latin-1") if "|" in l]
        items = pd.read_csv(os.path.join(path, "u.item"), sep="|", header=None, encoding="latin-1",
                            names=["movie_id", "title", "release", "video", "url"] + genre_names)
        flags = items[genre_names].to_numpy()
        items["genres"] = ["|".join(g for g, f in zip(genre_names, row) if f) for row in flags]
        movies = items[["movie_id", "title", "genres"]]
    elif os.path.exists(os.path.join(path, "ratings.dat")):
        rd = dict(sep="::", header=None, engine="python", encoding="latin-1")
        ratings = pd.read_csv(os.path.join(path, "ratings.dat"), names=["user_id", "movie_id", "rating", "timestamp"], **rd)
        users = pd.read_csv(os.path.join(path, "users.dat"), names=["user_id", "gender", "age", "occupation", "zip"],
                            dtype={"zip": str}, **rd)
        movies = pd.read_csv(os.path.join(path, "movies.dat"), names=["movie_id", "title", "genres"], **rd)
    else:
        raise SystemExit("%s: neither MovieLens-100K (u.data) nor ML-1M (ratings.dat) files" % path)
    data = ratings.merge(movies, on="movie_id", how="left").merge(users, on="user_id", how="left")
    return data[["user_id", "movie_id", "rating", "timestamp", "title", "genres", "gender", "age", "occupation", "zip"]]


def item_sample_weight(items):
    """The examples' get_item_sample_weight: count^0.75, normalised to sum 1 (word2vec)."""
    cnt = Counter(items)
    p = {k: c**0.75 for k, c in cnt.items()}
    s = sum(p.values())
    return {k: v / s for k, v in p.items()}


def _sparse(name, vocab, shared_with=None):
    return {"type": "sparse", "name": name, "vocab_size": int(vocab), "embed_dim": EMBED_DIM, "shared_with": shared_with}


def _seq(name, vocab, pooling, shared_with=None):
    return {"type": "sequence", "name": name, "vocab_size": int(vocab), "embed_dim": EMBED_DIM, "pooling": pooling,
            "shared_with": shared_with}


def feature_specs(model, vmax):
    """The example's feature lists, as sample-dir JSON specs (vmax = the examples' feature_max_idx)."""
    user = [_sparse(c, vmax[c]) for c in USER_COLS]
    hist_mean = _seq("hist_movie_id", vmax["movie_id"], "mean", "movie_id")
    hist_concat = _seq("hist_movie_id", vmax["movie_id"], "concat", "movie_id")
    neg_concat = [_seq("neg_items", vmax["movie_id"], "concat", "movie_id")]
    item_id = [_sparse("movie_id", vmax["movie_id"])]
    item_id_cate = item_id + [_sparse("cate_id", vmax["cate_id"])]
    if model == "dssm":
        return dict(user_features=user + [hist_mean], item_features=item_id_cate)
    if model == "youtube_dnn":
        return dict(user_features=user + [hist_mean], item_features=item_id, neg_item_feature=neg_concat)
    if model == "youtube_sbc":
        return dict(user_features=user + [hist_mean], item_features=item_id_cate,
                    sample_weight_feature=[{"type": "dense", "name": "sample_weight", "embed_dim": 1}])
    if model == "facebook_dssm":  # neg_items / neg_cate get their own tables in the example (no shared_with)
        return dict(user_features=user + [hist_mean], item_features=item_id_cate,
                    neg_item_feature=[_sparse("neg_items", vmax["movie_id"]), _sparse("neg_cate", vmax["cate_id"])])
    if model in ("gru4rec", "mind"):
        return dict(user_features=user, history_features=[hist_concat], item_features=item_id,
                    neg_item_feature=neg_concat)
    raise SystemExit("unknown model %s (have: %s)" % (model, ", ".join(EXAMPLES)))


def export_movielens(path, model, out, seed=2022, data_name=None):
    """Runs Torch-RecHub's preprocessing for `model` on the MovieLens files at `path`; writes sample dir `out`."""
    from sklearn.preprocessing import LabelEncoder
    import torch
    import torch_rechub
    from torch_rechub.utils.data import array_replace_with_dict, df_to_dict
    from torch_rechub.utils.match import gen_model_input, generate_seq_feature_match

    if model not in EXAMPLES:
        raise SystemExit("unknown model %s (have: %s)" % (model, ", ".join(EXAMPLES)))
    ex = EXAMPLES[model]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    data = load_movielens(path)
    t_read = time.perf_counter() - t0

    t1 = time.perf_counter()
    data["cate_id"] = data["genres"].apply(lambda x: x.split("|")[0])
    vmax = {}
    for f in SPARSE_COLS:
        data[f] = LabelEncoder().fit_transform(data[f]) + 1
        vmax[f] = int(data[f].max()) + 1
    item_cols = [ITEM_COL, "cate_id"]
    if model == "youtube_sbc":
        data["sample_weight"] = data[ITEM_COL].map(item_sample_weight(data[ITEM_COL].tolist()))
        item_cols.append("sample_weight")
    user_profile = data[USER_COLS].drop_duplicates(USER_COL)
    item_profile = data[item_cols].drop_duplicates(ITEM_COL)
    t_encode = time.perf_counter() - t1

    t2 = time.perf_counter()
    df_train, df_test = generate_seq_feature_match(data, USER_COL, ITEM_COL, time_col="timestamp", item_attribute_cols=[],
                                                   sample_method=1, mode=ex["gen_mode"], neg_ratio=ex["neg_ratio"],
                                                   min_item=0)
    t_genseq = time.perf_counter() - t2
    t3 = time.perf_counter()
    pad = ex["padding"]
    x_train = gen_model_input(df_train, user_profile, USER_COL, item_profile, ITEM_COL, seq_max_len=SEQ_MAX_LEN,
                              padding=pad, truncating=pad)
    if model == "facebook_dssm":
        cate_map = dict(zip(item_profile[ITEM_COL], item_profile["cate_id"]))
        x_train["neg_cate"] = array_replace_with_dict(x_train["neg_items"], cate_map)
    x_test = gen_model_input(df_test, user_profile, USER_COL, item_profile, ITEM_COL, seq_max_len=SEQ_MAX_LEN,
                             padding=pad, truncating=pad)
    t_input = time.perf_counter() - t3

    # train: every column of the example's x_train, in its order (the DataLoader collates all of them).
    train = {k: np.asarray(v) for k, v in x_train.items()}
    # test: the user side only; the held-out item goes to test_target.npy.
    test = {k: np.asarray(x_test[k]) for k in x_test if k in USER_COLS or k.startswith(("hist_", "histlen_"))}
    items_df = item_profile.sort_values(ITEM_COL)
    items = df_to_dict(items_df)
    hyper = {"lr": ex["lr"], "weight_decay": 1e-6, "batch_size": ex["batch_size"], "epochs": ex["epochs"],
             "neg_ratio": ex["neg_ratio"], "temperature": 0.02}
    for k in ("dims", "item_dims", "activation", "n_neg", "interest_num"):
        if k in ex:
            hyper[k] = ex[k]
    meta = {"model": model, "mode": ex["mode"], "gen_mode": ex["gen_mode"], "sample_method": 1,
            "seq_max_len": SEQ_MAX_LEN, "padding": pad, "truncating": pad, "embed_dim": EMBED_DIM, "hyper": hyper,
            "item_col": ITEM_COL, "user_col": USER_COL, "seed": seed,
            "source": {"generator": "torch-rechub %s: generate_seq_feature_match + gen_model_input (examples/matching/%s)"
                                    % (torch_rechub.__version__ if hasattr(torch_rechub, "__version__") else "?",
                                       ex["script"]),
                       "data": data_name or os.path.abspath(path),
                       "preprocess_seconds": {"read": round(t_read, 3), "encode": round(t_encode, 3),
                                              "gen_seq": round(t_genseq, 3), "gen_input": round(t_input, 3)}}}
    meta.update(feature_specs(model, vmax))
    return sample_dir.write_sample_dir(out, meta, train, test, np.asarray(x_test[ITEM_COL]), items)
