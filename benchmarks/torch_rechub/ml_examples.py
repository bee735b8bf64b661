"""Torch-RecHub's own MovieLens matching pipeline, written out as a rechub sample directory.

Mirrors examples/matching/run_ml_<model>.py of Torch-RecHub (the settings table below; the anchor
shared/anchors/torch-rechub-ml100k.md lists the same values): the merged MovieLens frame, cate_id =
first genre, LabelEncoder(+1) on the sparse columns, torch_rechub.utils.match.generate_seq_feature_match
and gen_model_input with the example's arguments. The library functions are called, not re-implemented,
so the samples are Torch-RecHub's own; only the CSV-building step (ML-100K / ML-1M files -> the
examples' ml-1m.csv layout) and the examples' 4-line get_item_sample_weight live here. Two models have no
MovieLens example: NARM and STAMP take run_sbr.py's settings (session data) on the same MovieLens rows, and
SASRec (no example at all) gets per-user rows built here from the library's rows (sasrec_rows).
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

# The examples' settings. gen_mode/neg_ratio go to generate_seq_feature_match (sample_method=1 everywhere,
# min_item=0); mode is MatchTrainer's; padding/truncating go to gen_model_input (truncating = padding unless
# given); lr/weight_decay to MatchTrainer's optimizer_params; the other keys are the model's constructor
# arguments (written to meta.json "hyper"). Sources (datawhalechina/torch-rechub, examples/matching/):
#   dssm .. facebook_dssm     run_ml_<model>.py
#   gru4rec, mind             run_ml_gru4rec.py, run_ml_mind.py (epochs 10; batch 256; device cuda:0 -> cpu)
#   comirec_dr, comirec_sa    run_ml_comirec.py --model_name comirec_dr | comirec_sa (one script, two models)
#   sine                      run_ml_sine.py (its own argparse defaults: embedding 128, hidden 512, 10 concepts,
#                             2 intentions, temperature 0.1, seq_max_len 50, padding 'pre'; only user_id and
#                             movie_id are encoded and fed)
#   narm, stamp               run_sbr.py --model_name narm | stamp: there is NO MovieLens example; run_sbr trains
#                             them on session data (diginetica / yoochoose) with a full softmax over all items
#                             (model(x) = scores of every item, MatchTrainer mode 2, label = the next item's id).
#                             Its model and trainer settings are applied here to MovieLens samples from
#                             generate_seq_feature_match mode 2 (the rows the other sequence models train on; the
#                             drawn neg_items are kept as a column but the full softmax does not use them), with
#                             seq_max_len 50 and post padding/truncation like run_ml_gru4rec.py (run_sbr keeps the
#                             first max_seq_len=19 items of a session and pads each batch to its longest sequence;
#                             compare.py pads batches the same way).
#   sasrec                    NO example at all in Torch-RecHub (no run_*sasrec*.py in examples/, tutorials/ or tests;
#                             the docs only show the constructor). SASRec.forward needs seq/pos/neg id sequences and
#                             returns per-position (pos_logits, neg_logits), which only MatchTrainer mode 1 (BPR)
#                             consumes; BPRLoss cannot broadcast [B, L] logits, so compare.py trains mode 1 on the
#                             non-padding positions (BPR per position). Samples: one row per user = the user's longest
#                             training prefix (sasrec_rows); model settings: constructor defaults except dropout 0.2
#                             (the docs' example); trainer: the SASRec paper's (lr 1e-3, batch 128, no weight decay),
#                             200 epochs (943 rows = 8 steps per epoch on ML-100K).
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
                    dims=[128, 64, 16], num_layers=2, padding="post"),
    "mind": dict(script="run_ml_mind.py", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3, batch_size=256, epochs=10,
                 interest_num=4, routing_times=3, padding="post"),
    "comirec_dr": dict(script="run_ml_comirec.py --model_name comirec_dr", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3,
                       batch_size=256, epochs=10, interest_num=4, routing_times=3, padding="post"),
    "comirec_sa": dict(script="run_ml_comirec.py --model_name comirec_sa", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3,
                       batch_size=256, epochs=10, interest_num=4, hidden_dim=64, padding="post"),
    "sine": dict(script="run_ml_sine.py", gen_mode=2, neg_ratio=3, mode=2, lr=1e-3, batch_size=256, epochs=10,
                 embed_dim=128, hidden_dim=512, num_concept=10, num_intention=2, num_heads=1, temperature=0.1,
                 padding="pre", user_cols=["user_id"], item_cols=["movie_id"]),
    "narm": dict(script="run_sbr.py --model_name narm (session data; settings applied to MovieLens)", gen_mode=2,
                 neg_ratio=3, mode=2, loss="full", lr=1e-3, weight_decay=0.0, batch_size=512, epochs=30, embed_dim=100,
                 hidden_dim=50, emb_dropout=0.25, session_rep_dropout=0.5, temperature=None, padding="post",
                 user_cols=["user_id"], item_cols=["movie_id"]),
    "stamp": dict(script="run_sbr.py --model_name stamp (session data; settings applied to MovieLens)", gen_mode=2,
                  neg_ratio=3, mode=2, loss="full", lr=1e-3, weight_decay=0.0, batch_size=512, epochs=30, embed_dim=100,
                  weight_std=0.05, emb_std=0.002, temperature=None, padding="post", user_cols=["user_id"],
                  item_cols=["movie_id"]),
    "sasrec": dict(script="none (Torch-RecHub has no SASRec example; see ml_examples.py)", gen_mode=2, neg_ratio=3,
                   mode=1, lr=1e-3, weight_decay=0.0, batch_size=128, epochs=200, max_len=50, num_blocks=2, num_heads=1,
                   dropout=0.2, temperature=None, padding="post", truncating="pre", user_cols=["user_id"],
                   item_cols=["movie_id"]),
}
# meta.json "hyper" keys copied from an example when it sets them (constructor arguments and loss choices).
HYPER_KEYS = ("dims", "item_dims", "activation", "n_neg", "num_layers", "interest_num", "routing_times", "hidden_dim",
              "num_concept", "num_intention", "num_heads", "num_blocks", "max_len", "dropout", "emb_dropout",
              "session_rep_dropout", "weight_std", "emb_std", "loss")


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


def _sparse(name, vocab, shared_with=None, dim=EMBED_DIM, padding_idx=None):
    f = {"type": "sparse", "name": name, "vocab_size": int(vocab), "embed_dim": dim, "shared_with": shared_with}
    if padding_idx is not None:
        f["padding_idx"] = padding_idx
    return f


def _seq(name, vocab, pooling, shared_with=None, dim=EMBED_DIM):
    return {"type": "sequence", "name": name, "vocab_size": int(vocab), "embed_dim": dim, "pooling": pooling,
            "shared_with": shared_with}


def feature_specs(model, vmax):
    """The example's feature lists, as sample-dir JSON specs (vmax = the examples' feature_max_idx)."""
    d = EXAMPLES[model].get("embed_dim", EMBED_DIM) if model in EXAMPLES else EMBED_DIM
    user = [_sparse(c, vmax[c]) for c in USER_COLS if c in vmax]
    hist_mean = _seq("hist_movie_id", vmax["movie_id"], "mean", "movie_id")
    hist_concat = _seq("hist_movie_id", vmax["movie_id"], "concat", "movie_id", dim=d)
    neg_concat = [_seq("neg_items", vmax["movie_id"], "concat", "movie_id", dim=d)]
    item_id = [_sparse("movie_id", vmax["movie_id"], dim=d)]
    item_id_cate = item_id + [_sparse("cate_id", vmax["cate_id"])] if "cate_id" in vmax else None
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
    if model in ("gru4rec", "mind", "comirec_dr", "comirec_sa"):
        return dict(user_features=user, history_features=[hist_concat], item_features=item_id,
                    neg_item_feature=neg_concat)
    if model == "sine":  # one item table (num_items x 128) for history, positives and negatives; no user features
        return dict(user_features=[], history_features=[hist_concat], item_features=item_id,
                    neg_item_feature=neg_concat)
    if model in ("narm", "stamp"):  # one item table with padding_idx 0; full softmax, so no negative feature
        return dict(user_features=[], history_features=[hist_concat],
                    item_features=[_sparse("movie_id", vmax["movie_id"], dim=d, padding_idx=0)])
    if model == "sasrec":  # SASRec(features=[seq, pos, neg]) with one table (compare.py feeds the history as "seq")
        v = vmax["movie_id"]
        return dict(user_features=[], history_features=[_seq("hist_movie_id", v, "concat", "movie_id", dim=d)],
                    item_features=item_id,
                    position_features=[_seq("pos_movie_id", v, "concat", "movie_id", dim=d),
                                       _seq("neg_movie_id", v, "concat", "movie_id", dim=d)])
    raise SystemExit("unknown model %s (have: %s)" % (model, ", ".join(EXAMPLES)))


def sasrec_rows(df_train, seq_max_len, padding="post", truncating="pre"):
    """SASRec's training rows from generate_seq_feature_match's list-wise rows (Torch-RecHub has no SASRec data
    pipeline to call; this is the SASRec paper's construction on the same split and the same drawn negatives).

    Per user, the rows with histories items[:1] .. items[:n-2] (targets items[1] .. items[n-2]; items[n-1] is the
    test item) collapse into ONE row: hist = items[0 .. n-3], pos = items[1 .. n-2] (hist shifted by one: position
    t predicts the item after it), neg[t] = the first of the neg_items the library drew for the row whose target is
    pos[t] (sample_method 1, so the same draws the other models' rows get), user_id, movie_id = items[n-2] (the
    last target), histlen = the number of positions. Sequences keep their latest seq_max_len positions (truncating
    'pre') and are padded at the end ('post'), because SASRec.user_tower reads the output at index (number of
    non-zero ids - 1). Rows in user order. Columns (rechub's names): user_id, movie_id, hist_movie_id,
    histlen_movie_id, pos_movie_id, neg_movie_id; compare.py hands the history to SASRec as "seq", the name its
    forward reads."""
    from torch_rechub.utils.data import pad_sequences
    ordered = df_train.sort_values([USER_COL, "histlen_" + ITEM_COL], kind="mergesort")
    users, targets, seqs, poss, negs = [], [], [], [], []
    for uid, g in ordered.groupby(USER_COL, sort=True):
        lens = g["histlen_" + ITEM_COL].tolist()
        if lens != list(range(1, len(lens) + 1)):
            raise SystemExit("sasrec_rows: user %s has history lengths %s, expected 1..%d" % (uid, lens[:5], len(lens)))
        last = g.iloc[-1]
        items = list(last["hist_" + ITEM_COL]) + [int(last[ITEM_COL])]
        users.append(int(uid))
        targets.append(int(last[ITEM_COL]))
        seqs.append(items[:-1])
        poss.append(items[1:])
        negs.append([int(n[0]) for n in g["neg_items"]])
    pad = dict(maxlen=seq_max_len, padding=padding, truncating=truncating, value=0)
    return {USER_COL: np.asarray(users), ITEM_COL: np.asarray(targets), "hist_" + ITEM_COL: pad_sequences(seqs, **pad),
            "histlen_" + ITEM_COL: np.asarray([min(len(q), seq_max_len) for q in seqs]),
            "pos_" + ITEM_COL: pad_sequences(poss, **pad), "neg_" + ITEM_COL: pad_sequences(negs, **pad)}


def export_movielens(path, model, out, seed=2022, data_name=None):
    """Runs Torch-RecHub's preprocessing for `model` on the MovieLens files at `path`; writes sample dir `out`."""
    from sklearn.preprocessing import LabelEncoder
    import torch
    from importlib import metadata
    from torch_rechub.utils.data import array_replace_with_dict, df_to_dict
    from torch_rechub.utils.match import gen_model_input, generate_seq_feature_match

    if model not in EXAMPLES:
        raise SystemExit("unknown model %s (have: %s)" % (model, ", ".join(EXAMPLES)))
    ex = EXAMPLES[model]
    user_cols = ex.get("user_cols", USER_COLS)
    item_cols = list(ex.get("item_cols", [ITEM_COL, "cate_id"]))
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
        if f in user_cols or f in item_cols:  # SINE's example encodes only user_id and movie_id
            data[f] = LabelEncoder().fit_transform(data[f]) + 1
            vmax[f] = int(data[f].max()) + 1
    if model == "youtube_sbc":
        data["sample_weight"] = data[ITEM_COL].map(item_sample_weight(data[ITEM_COL].tolist()))
        item_cols.append("sample_weight")
    user_profile = data[user_cols].drop_duplicates(USER_COL)
    item_profile = data[item_cols].drop_duplicates(ITEM_COL)
    t_encode = time.perf_counter() - t1

    t2 = time.perf_counter()
    df_train, df_test = generate_seq_feature_match(data, USER_COL, ITEM_COL, time_col="timestamp", item_attribute_cols=[],
                                                   sample_method=1, mode=ex["gen_mode"], neg_ratio=ex["neg_ratio"],
                                                   min_item=0)
    t_genseq = time.perf_counter() - t2
    t3 = time.perf_counter()
    pad = ex["padding"]
    trunc = ex.get("truncating", pad)
    x_test = gen_model_input(df_test, user_profile, USER_COL, item_profile, ITEM_COL, seq_max_len=SEQ_MAX_LEN,
                             padding=pad, truncating=trunc)
    if model == "sasrec":
        train = sasrec_rows(df_train, SEQ_MAX_LEN, padding=pad, truncating=trunc)
        test = {k: np.asarray(x_test[k]) for k in (USER_COL, "hist_" + ITEM_COL, "histlen_" + ITEM_COL)}
    else:
        x_train = gen_model_input(df_train, user_profile, USER_COL, item_profile, ITEM_COL, seq_max_len=SEQ_MAX_LEN,
                                  padding=pad, truncating=trunc)
        if model == "facebook_dssm":
            cate_map = dict(zip(item_profile[ITEM_COL], item_profile["cate_id"]))
            x_train["neg_cate"] = array_replace_with_dict(x_train["neg_items"], cate_map)
        # train: every column of the example's x_train, in its order (the DataLoader collates all of them).
        train = {k: np.asarray(v) for k, v in x_train.items()}
        # test: the user side only; the held-out item goes to test_target.npy.
        test = {k: np.asarray(x_test[k]) for k in x_test if k in user_cols or k.startswith(("hist_", "histlen_"))}
    t_input = time.perf_counter() - t3

    items_df = item_profile.sort_values(ITEM_COL)
    items = df_to_dict(items_df)
    hyper = {"lr": ex["lr"], "weight_decay": ex.get("weight_decay", 1e-6), "batch_size": ex["batch_size"],
             "epochs": ex["epochs"], "neg_ratio": ex["neg_ratio"]}
    if ex.get("temperature", 0.02) is not None:  # the constructor's temperature (see README: not every model applies it)
        hyper["temperature"] = ex.get("temperature", 0.02)
    for k in HYPER_KEYS:
        if k in ex:
            hyper[k] = ex[k]
    meta = {"model": model, "mode": ex["mode"], "gen_mode": ex["gen_mode"], "sample_method": 1,
            "seq_max_len": SEQ_MAX_LEN, "padding": pad, "truncating": trunc, "embed_dim": ex.get("embed_dim", EMBED_DIM),
            "hyper": hyper, "item_col": ITEM_COL, "user_col": USER_COL, "seed": seed,
            "source": {"generator": "torch-rechub %s: generate_seq_feature_match + %s (examples/matching/%s)"
                                    % (metadata.version("torch-rechub"),
                                       "sasrec_rows" if model == "sasrec" else "gen_model_input", ex["script"]),
                       "data": data_name or os.path.abspath(path),
                       "preprocess_seconds": {"read": round(t_read, 3), "encode": round(t_encode, 3),
                                              "gen_seq": round(t_genseq, 3), "gen_input": round(t_input, 3)}}}
    meta.update(feature_specs(model, vmax))
    return sample_dir.write_sample_dir(out, meta, train, test, np.asarray(x_test[ITEM_COL]), items)
