#!/usr/bin/env python3
"""Torch-RecHub side of the side-by-side benchmark: train and evaluate Torch-RecHub on a rechub sample directory.

    trh-python compare.py --samples DIR [--epochs N] [--json-out FILE]
        Builds the Torch-RecHub model named in DIR/meta.json with its hyper-parameters and feature specs,
        trains it with MatchTrainer.train_one_epoch once per epoch (timed; torch 2 threads, seed 2022,
        DataLoader num_workers 0), embeds every test user and every item with MatchTrainer.inference_embedding,
        ranks ALL items by cosine (exact), and scores with torch_rechub.basic.metric.topk_metrics at K=10/50/100.
        The last stdout line is one JSON object. Models: MODELS below; where Torch-RecHub 0.8.0 cannot run a model
        through that path unchanged (NARM, STAMP, SASRec), the plumbing around the library's code is adapted and
        README.md "Sequence and multi-interest models" says how.

    trh-python compare.py --from-movielens-100k PATH --model M --out DIR
        Runs Torch-RecHub's own example preprocessing (examples/matching/run_ml_<M>.py) on MovieLens and writes
        the samples as a sample directory, so rechub's sample generation can be cross-checked against it and
        both engines can train on Torch-RecHub's samples. (--from-movielens-1m takes ML-1M .dat files.)

trh-python is the launcher scripts/setup_torch_rechub.sh writes (Debian torch on OpenBLAS, 2 threads).
Format of a sample directory: benchmarks/torch_rechub/README.md.
"""
import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_dir  # noqa: E402

TOPKS = (10, 50, 100)
MODELS = ("dssm", "youtube_dnn", "youtube_sbc", "facebook_dssm", "gru4rec", "mind", "comirec_dr", "comirec_sa", "sine",
          "narm", "stamp", "sasrec")
# Models whose item vectors are rows of an embedding table that their item_tower cannot return in 0.8.0
# (NARM/STAMP: item_tower needs item_feature, which switches forward() away from the full softmax their
# example trains; SASRec: item_tower reads a nonexistent attribute). The table's rows are read directly.
ITEM_TABLE = {"narm": lambda m: m.item_emb.weight, "stamp": lambda m: m.item_emb.weight,
              "sasrec": lambda m: m.item_emb.embed_dict[SASREC_SEQ].weight}
# SASRec's forward reads its history as x["seq"] whatever its feature is called: the sample directory's history
# column (hist_<item>) is renamed to this, and the model's history feature is given this name (it owns the table;
# the pos_/neg_ position features share it).
SASREC_SEQ = "seq"
# Models trained on batches padded to their longest history, as run_sbr.py's collate_fn does (NARM packs the
# padded sequence and needs it; for STAMP it changes nothing but time).
TRIM_HISTORY = ("narm", "stamp")


def log(*a):
    print(*a, flush=True)


def blas_in_use():
    """The libblas / libopenblas files mapped into this process (what torch's BLAS calls resolve to)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if "/libblas.so" in l or "/libopenblas" in l}
    except OSError:
        return "unknown"
    return ",".join(sorted(libs)) or "none mapped"


def build_features(specs):
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    out = []
    for f in specs or []:
        if f["type"] == "sparse":
            out.append(SparseFeature(f["name"], vocab_size=f["vocab_size"], embed_dim=f["embed_dim"],
                                     shared_with=f.get("shared_with"), padding_idx=f.get("padding_idx")))
        elif f["type"] == "sequence":
            out.append(SequenceFeature(f["name"], vocab_size=f["vocab_size"], embed_dim=f["embed_dim"],
                                       pooling=f.get("pooling", "mean"), shared_with=f.get("shared_with"),
                                       padding_idx=f.get("padding_idx")))
        else:
            out.append(DenseFeature(f["name"], embed_dim=f.get("embed_dim", 1)))
    return out


def tower_params(h, dims_key):
    p = {"dims": list(h[dims_key])}
    for k in ("activation", "dropout"):
        if h.get(k) is not None:
            p[k] = h[k]
    return p


def build_model(meta):
    """The Torch-RecHub model of meta["model"], constructed exactly as the matching example does."""
    from torch_rechub.models import matching as M
    h, name = meta["hyper"], meta["model"]
    uf = build_features(meta.get("user_features"))
    hf = build_features(meta.get("history_features"))
    itf = build_features(meta.get("item_features"))
    nf = build_features(meta.get("neg_item_feature"))
    swf = build_features(meta.get("sample_weight_feature"))
    temp = h.get("temperature", 1.0)
    if "item_dims" not in h and "dims" in h:
        h = dict(h, item_dims=h["dims"])
    if name == "dssm":
        return M.DSSM(uf, itf, temperature=temp, user_params=tower_params(h, "dims"),
                      item_params=tower_params(h, "item_dims"))
    if name == "youtube_dnn":
        return M.YoutubeDNN(uf, itf, nf, user_params=tower_params(h, "dims"), temperature=temp)
    if name == "youtube_sbc":
        return M.YoutubeSBC(uf, itf, swf, user_params=tower_params(h, "dims"), item_params=tower_params(h, "item_dims"),
                            batch_size=h["batch_size"], n_neg=h.get("n_neg", 3), temperature=temp)
    if name == "facebook_dssm":
        return M.FaceBookDSSM(uf, itf, nf, temperature=temp, user_params=tower_params(h, "dims"),
                              item_params=tower_params(h, "item_dims"))
    if name == "gru4rec":
        return M.GRU4Rec(uf, hf, itf, nf, user_params=tower_params(h, "dims"), temperature=temp)
    if name == "mind":
        return M.MIND(uf, hf, itf, nf, max_length=meta["seq_max_len"], temperature=temp,
                      interest_num=h.get("interest_num", 4))
    if name == "comirec_dr":
        return M.ComirecDR(uf, hf, itf, nf, max_length=meta["seq_max_len"], temperature=temp,
                           interest_num=h.get("interest_num", 4))
    if name == "comirec_sa":
        return M.ComirecSA(uf, hf, itf, nf, temperature=temp, interest_num=h.get("interest_num", 4))
    if name == "sine":  # SINE takes column names and builds its own item table
        return M.SINE([f.name for f in hf], [f.name for f in itf], [f.name for f in nf],
                      num_items=hf[0].vocab_size, embedding_dim=hf[0].embed_dim, hidden_dim=h["hidden_dim"],
                      num_concept=h["num_concept"], num_intention=h["num_intention"], seq_max_len=meta["seq_max_len"],
                      num_heads=h.get("num_heads", 1), temperature=temp)
    if name == "narm":  # run_sbr.py: NARM(item_history_feature, hidden_dim, emb_dropout, session_rep_dropout)
        return M.NARM(hf[0], h["hidden_dim"], h["emb_dropout"], h["session_rep_dropout"])
    if name == "stamp":  # run_sbr.py: STAMP(item_history_feature, weight_std, emb_std)
        return M.STAMP(hf[0], h["weight_std"], h["emb_std"])
    if name == "sasrec":  # SASRec(features=[seq, pos, neg], max_len, dropout_rate, num_blocks, num_heads)
        from torch_rechub.basic.features import SequenceFeature
        seq = SequenceFeature(SASREC_SEQ, vocab_size=hf[0].vocab_size, embed_dim=hf[0].embed_dim, pooling="concat")
        pf = [SequenceFeature(f["name"], vocab_size=f["vocab_size"], embed_dim=f["embed_dim"], pooling="concat",
                              shared_with=SASREC_SEQ) for f in meta["position_features"]]
        return M.SASRec([seq] + pf, max_len=h.get("max_len", meta["seq_max_len"]), dropout_rate=h.get("dropout", 0.5),
                        num_blocks=h.get("num_blocks", 2), num_heads=h.get("num_heads", 1))
    raise SystemExit("compare.py: model %r is not supported (have: %s)" % (name, ", ".join(MODELS)))


def position_pairs(sasrec, pos_col):
    """SASRec trained by MatchTrainer mode 1: forward() gives per-position (pos_logits, neg_logits) [B, L], which
    BPRLoss cannot take ([B*L, 1] - [B, L] does not broadcast). The wrapper hands BPRLoss the logits of the
    non-padding positions (pos id != 0) as two 1-d tensors, so the library's loss is BPR averaged over every
    real position: the SASRec objective with Torch-RecHub's pair-wise loss. Parameters are the model's own."""
    import torch

    class PositionPairs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            pos_logits, neg_logits = self.inner(x)
            real = x[pos_col] != 0
            return pos_logits[real], neg_logits[real]

    return PositionPairs(sasrec)


def trimming_collate(column):
    """default_collate, then cut `column` (post-padded histories) to the batch's longest history."""
    from torch.utils.data.dataloader import default_collate

    def collate(batch):
        out = default_collate(batch)
        x = out[0] if isinstance(out, (list, tuple)) else out
        h = x[column]
        x[column] = h[:, :max(1, int((h != 0).sum(dim=1).max()))]
        return out

    return collate


def make_dataloaders(meta, x_train, y_train, x_test, x_items, batch_size, num_workers):
    """MatchDataGenerator's three loaders (train shuffled; test and items in order), with run_sbr.py's per-batch
    padding for the models in TRIM_HISTORY."""
    from torch.utils.data import DataLoader
    from torch_rechub.utils.data import MatchDataGenerator, PredictDataset, TorchDataset
    if meta["model"] not in TRIM_HISTORY:
        return MatchDataGenerator(x=x_train, y=y_train).generate_dataloader(x_test, x_items, batch_size=batch_size,
                                                                            num_workers=num_workers)
    collate = trimming_collate(meta["history_features"][0]["name"])
    return (DataLoader(TorchDataset(x_train, y_train), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                       collate_fn=collate),
            DataLoader(PredictDataset(x_test), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                       collate_fn=collate),
            DataLoader(PredictDataset(x_items), batch_size=batch_size, shuffle=False, num_workers=num_workers))


def to_model_input(part, meta=None):
    """Sample-dir arrays -> the dtypes Torch-RecHub's own pipeline feeds (int64 ids, as pandas produces); for
    SASRec the history column is renamed to the "seq" its forward reads."""
    rename = {}
    if meta is not None and meta["model"] == "sasrec":
        rename = {meta["history_features"][0]["name"]: SASREC_SEQ}
    return {rename.get(k, k): (v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in part.items()}


def exact_topk(user_emb, item_emb, k):
    """Top-k item rows by cosine over ALL items (the order the examples' Annoy 'angular' index approximates).
    A multi-interest user [U, K, D] scores an item by its best interest, which equals merging the
    per-interest top-k lists by score as movielens_utils.match_evaluation does."""
    import torch
    u = torch.nn.functional.normalize(user_emb.float(), p=2, dim=-1)
    it = torch.nn.functional.normalize(item_emb.float(), p=2, dim=-1)
    if u.dim() == 3:
        scores = torch.einsum("ukd,id->uki", u, it).max(dim=1).values
    else:
        scores = u @ it.t()
    return torch.topk(scores, k=k, dim=1, largest=True, sorted=True).indices.numpy()


def evaluate(sd, user_emb, item_emb):
    from torch_rechub.basic.metric import topk_metrics
    meta = sd["meta"]
    ks = [k for k in TOPKS if k <= meta["n_items"]]
    top = exact_topk(user_emb, item_emb, max(ks))
    item_ids = sd["items"][meta["item_col"]]
    users = sd["test"][meta["user_col"]]
    y_true, y_pred = {}, {}
    for u, target, row in zip(users.tolist(), sd["test_target"].tolist(), top):
        y_true.setdefault(u, []).append(target)  # grouped by user, like match_evaluation's ground truth
        y_pred[u] = item_ids[row].tolist()
    res = topk_metrics(y_true=y_true, y_pred=y_pred, topKs=ks)
    out = {}
    for metric, entries in res.items():
        for e in entries:  # "Hit@10: 0.0106"
            key, val = e.split(": ")
            out[key] = float(val)
    return out


def run_samples(args):
    import torch
    import torch_rechub  # noqa: F401
    from importlib import metadata
    from torch_rechub.trainers import MatchTrainer

    sd = sample_dir.read_sample_dir(args.samples)
    sample_dir.validate(sd)
    meta = sd["meta"]
    h = meta["hyper"]
    epochs = args.epochs if args.epochs is not None else int(h["epochs"])
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    blas = blas_in_use()
    load_start = os.getloadavg()[0]
    if load_start > 2.5:
        log("WARNING: 1-minute load average is %.1f on this machine; epoch times will be inflated" % load_start)
    if "openblas" not in blas:
        log("WARNING: torch is not using OpenBLAS (%s); run through the trh-python launcher" % blas)

    x_train = to_model_input(sd["train"], meta)
    n_train = meta["n_train"]
    batch = int(h["batch_size"])
    if meta["mode"] == 0:
        y_train = sd["train"]["label"].astype(np.float32)
    elif h.get("loss") == "full":  # full softmax over every item id (run_sbr.py): the class is the target's id
        y_train = x_train[meta["item_col"]]
    else:  # list-wise: class 0 is the positive; pair-wise: unused placeholder (as in the examples)
        y_train = np.zeros(n_train, dtype=np.int64)
    if meta["model"] == "sasrec" and (n_train % batch == 1 or meta["n_test_users"] % batch == 1):
        raise SystemExit("compare.py: SASRec.seq_forward squeezes a batch of one row into the wrong shape; "
                         "%d train / %d test rows leave one at batch %d: pick another batch_size"
                         % (n_train, meta["n_test_users"], batch))
    model = build_model(meta)
    train_model = position_pairs(model, meta["position_features"][0]["name"]) if meta["model"] == "sasrec" else model
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="trh_compare_") as tmp:
        trainer = MatchTrainer(train_model, mode=meta["mode"],
                               optimizer_params={"lr": h["lr"], "weight_decay": h["weight_decay"]},
                               n_epoch=epochs, device="cpu", model_path=tmp)
        train_dl, test_dl, item_dl = make_dataloaders(meta, x_train, y_train, to_model_input(sd["test"], meta),
                                                      to_model_input(sd["items"]), batch, args.num_workers)
        log("torch-rechub %s on %s: model %s (%d parameters), mode %d, %d train samples, %d test users, %d items, "
            "%d epochs x batch %d, lr %g, threads %d, blas %s" %
            (metadata.version("torch-rechub"), args.samples, meta["model"], n_params, meta["mode"], n_train,
             meta["n_test_users"], meta["n_items"], epochs, h["batch_size"], h["lr"], torch.get_num_threads(), blas))
        epoch_seconds, epoch_loss = [], []
        capped = False
        for e in range(epochs):
            if args.train_cap_s and epoch_seconds and \
                    sum(epoch_seconds) + np.mean(epoch_seconds) > args.train_cap_s:
                capped = True
                break
            t = time.perf_counter()
            loss = trainer.train_one_epoch(train_dl)
            epoch_seconds.append(time.perf_counter() - t)
            epoch_loss.append(float(loss))
            log("epoch %d/%d: %.2f s, loss %.4f" % (e + 1, epochs, epoch_seconds[-1], epoch_loss[-1]))
        torch.save(model.state_dict(), os.path.join(tmp, "model.pth"))
        t = time.perf_counter()
        user_emb = trainer.inference_embedding(model=model, mode="user", data_loader=test_dl, model_path=tmp)
        if meta["model"] in ITEM_TABLE:
            ids = torch.as_tensor(sd["items"][meta["item_col"]].astype(np.int64))
            item_emb = ITEM_TABLE[meta["model"]](model).detach()[ids]
        else:
            item_emb = trainer.inference_embedding(model=model, mode="item", data_loader=item_dl, model_path=tmp)
        infer_s = time.perf_counter() - t
    t = time.perf_counter()
    metrics = evaluate(sd, user_emb, item_emb)
    eval_s = time.perf_counter() - t
    train_s = sum(epoch_seconds)
    result = {
        "impl": "torch-rechub",
        "model": meta["model"],
        "samples": os.path.abspath(args.samples),
        "mode": meta["mode"],
        "epochs": len(epoch_seconds),
        "epochs_requested": epochs,
        "capped": capped,
        "batch_size": int(h["batch_size"]),
        "lr": h["lr"],
        "n_train": n_train,
        "n_test_users": meta["n_test_users"],
        "n_items": meta["n_items"],
        "parameters": int(n_params),
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "epoch_seconds_mean": round(train_s / max(1, len(epoch_seconds)), 4),
        "epoch_loss": [round(l, 5) for l in epoch_loss],
        "train_seconds": round(train_s, 4),
        "samples_per_second": round(n_train * len(epoch_seconds) / train_s, 1) if train_s > 0 else None,
        "inference_seconds": round(infer_s, 4),
        "eval_seconds": round(eval_s, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "threads": torch.get_num_threads(),
        "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "seed": args.seed,
        "num_workers": args.num_workers,
        "blas": blas,
        "torch": torch.__version__,
        "torch_rechub": metadata.version("torch-rechub"),
    }
    result.update(metrics)
    line = json.dumps(result)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)


def run_export(args):
    import ml_examples
    path = args.from_movielens_100k or args.from_movielens_1m
    if not args.model or not args.out:
        raise SystemExit("compare.py: --from-movielens-* needs --model and --out")
    t = time.perf_counter()
    meta = ml_examples.export_movielens(path, args.model, args.out, seed=args.seed)
    wall = time.perf_counter() - t
    sd = sample_dir.read_sample_dir(args.out)
    summary = {"impl": "torch-rechub-preprocess", "model": args.model, "out": os.path.abspath(args.out),
               "n_train": meta["n_train"], "n_test_users": meta["n_test_users"], "n_items": meta["n_items"],
               "train_columns": {k: list(v.shape) for k, v in sd["train"].items()},
               "preprocess_seconds": meta["source"]["preprocess_seconds"], "wall_seconds": round(wall, 3)}
    print(json.dumps(summary), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", help="sample directory to train and evaluate on")
    ap.add_argument("--from-movielens-100k", metavar="PATH", help="ML-100K folder: export Torch-RecHub's samples")
    ap.add_argument("--from-movielens-1m", metavar="PATH", help="ML-1M folder (.dat files): same, for ML-1M")
    ap.add_argument("--model", choices=MODELS, help="with --from-movielens-*: which example's pipeline")
    ap.add_argument("--out", help="with --from-movielens-*: sample directory to write")
    ap.add_argument("--epochs", type=int, help="override meta.json hyper.epochs (e.g. 1 for a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2022)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--train-cap-s", type=float, default=0.0,
                    help="stop before an epoch that would push training past this many seconds (0 = no cap)")
    ap.add_argument("--json-out", help="also write the final JSON line to this file")
    args = ap.parse_args(argv)
    if args.samples:
        run_samples(args)
    elif args.from_movielens_100k or args.from_movielens_1m:
        run_export(args)
    else:
        ap.error("give --samples DIR or --from-movielens-100k PATH --model M --out DIR")


if __name__ == "__main__":
    try:
        main()
    except sample_dir.SampleDirError as e:
        raise SystemExit("compare.py: %s" % e)
