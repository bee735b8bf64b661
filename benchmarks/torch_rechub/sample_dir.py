"""Read, write and validate a rechub sample directory (format: benchmarks/torch_rechub/README.md).

numpy only, so both sides of the comparison (rechub's exporter tests and compare.py) can use it.
A sample directory holds exactly the arrays one model trains and is evaluated on:

    DIR/meta.json           model, trainer mode, hyper-parameters, feature specs, counts
    DIR/train/<col>.npy     one row per training sample (int32 [N] / [N, L]; float32 label, dense)
    DIR/test/<col>.npy      one row per test user: user features + histories (no target)
    DIR/test_target.npy     int32 [U]: the held-out item of each test user
    DIR/items/<col>.npy     one row per item, ids 1..I in order, with the item features
    DIR/<part>/columns.json the column order of that part
"""
import json
import os

import numpy as np

FORMAT_VERSION = 1
PARTS = ("train", "test", "items")
# position_features: per-position target sequences trained against every position of the history (SASRec's pos/neg).
FEATURE_LISTS = ("user_features", "history_features", "item_features", "neg_item_feature", "sample_weight_feature",
                 "position_features")
FEATURE_TYPES = ("sparse", "sequence", "dense")
POOLINGS = ("mean", "sum", "concat")


class SampleDirError(ValueError):
    """The sample directory is missing something or contradicts itself."""


def _atomic_save(path, arr):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    os.replace(tmp, path)


def _atomic_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _as_file_dtype(name, arr):
    arr = np.asarray(arr)
    if arr.dtype.kind in "iub":
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise SampleDirError("column %s does not fit int32" % name)
        return np.ascontiguousarray(arr, dtype="<i4")
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype="<f4")
    raise SampleDirError("column %s has dtype %s; only integer and float columns are stored" % (name, arr.dtype))


def write_part(dirpath, columns):
    """Writes one part (dict name -> array, insertion order kept) as <name>.npy files + columns.json."""
    os.makedirs(dirpath, exist_ok=True)
    rows = None
    for name, arr in columns.items():
        arr = _as_file_dtype(name, arr)
        if arr.ndim not in (1, 2):
            raise SampleDirError("column %s must be 1-d or 2-d, got shape %s" % (name, arr.shape))
        if rows is not None and arr.shape[0] != rows:
            raise SampleDirError("column %s has %d rows, the others %d" % (name, arr.shape[0], rows))
        rows = arr.shape[0]
        _atomic_save(os.path.join(dirpath, name + ".npy"), arr)
    _atomic_text(os.path.join(dirpath, "columns.json"), json.dumps(list(columns.keys())) + "\n")
    for n in os.listdir(dirpath):  # columns of an earlier export into the same folder
        if n.endswith(".npy") and n[:-4] not in columns:
            os.remove(os.path.join(dirpath, n))


def write_sample_dir(path, meta, train, test, test_target, items):
    """Writes a complete sample directory; meta's counts are filled in from the arrays."""
    os.makedirs(path, exist_ok=True)
    meta = dict(meta)
    meta["format_version"] = FORMAT_VERSION
    meta["n_train"] = int(len(next(iter(train.values()))))
    meta["n_test_users"] = int(len(test_target))
    meta["n_items"] = int(len(items[meta["item_col"]]))
    write_part(os.path.join(path, "train"), train)
    write_part(os.path.join(path, "test"), test)
    write_part(os.path.join(path, "items"), items)
    _atomic_save(os.path.join(path, "test_target.npy"), _as_file_dtype("test_target", test_target))
    _atomic_text(os.path.join(path, "meta.json"), json.dumps(meta, indent=1) + "\n")
    validate(read_sample_dir(path))
    return meta


def read_part(dirpath):
    """Reads one part in its columns.json order; returns dict name -> numpy array."""
    cj = os.path.join(dirpath, "columns.json")
    if os.path.exists(cj):
        with open(cj) as f:
            names = json.load(f)
    else:  # tolerate a hand-made directory without columns.json: alphabetical order
        names = sorted(n[:-4] for n in os.listdir(dirpath) if n.endswith(".npy"))
    out = {}
    for n in names:
        p = os.path.join(dirpath, n + ".npy")
        if not os.path.exists(p):
            raise SampleDirError("%s lists column %s but %s is missing" % (cj, n, p))
        arr = np.load(p, allow_pickle=False)
        if arr.dtype not in (np.dtype("<i4"), np.dtype("<f4")):
            raise SampleDirError("%s: dtype %s, expected int32 or float32" % (p, arr.dtype))
        out[n] = arr
    return out


def read_sample_dir(path):
    """Returns {"meta", "train", "test", "test_target", "items"} (arrays as stored)."""
    mp = os.path.join(path, "meta.json")
    if not os.path.exists(mp):
        raise SampleDirError("%s: no meta.json (is this a sample directory?)" % path)
    with open(mp) as f:
        meta = json.load(f)
    sd = {"meta": meta, "path": path}
    for part in PARTS:
        d = os.path.join(path, part)
        if not os.path.isdir(d):
            raise SampleDirError("%s: missing folder %s/" % (path, part))
        sd[part] = read_part(d)
    tp = os.path.join(path, "test_target.npy")
    if not os.path.exists(tp):
        raise SampleDirError("%s: missing test_target.npy" % path)
    sd["test_target"] = np.load(tp, allow_pickle=False)
    return sd


def all_features(meta):
    for key in FEATURE_LISTS:
        for f in meta.get(key) or []:
            yield key, f


def validate(sd):
    """Checks the directory against its meta.json; raises SampleDirError naming the first problem."""
    meta = sd["meta"]
    for k in ("model", "mode", "hyper", "user_features", "item_features", "item_col", "user_col", "n_train",
              "n_test_users", "n_items"):
        if k not in meta:
            raise SampleDirError("meta.json: missing key '%s'" % k)
    if meta["mode"] not in (0, 1, 2):
        raise SampleDirError("meta.json: mode must be 0, 1 or 2, got %r" % (meta["mode"],))
    for k in ("lr", "weight_decay", "batch_size", "epochs"):
        if k not in meta["hyper"]:
            raise SampleDirError("meta.json: hyper.%s missing" % k)
    counts = {"train": meta["n_train"], "test": meta["n_test_users"], "items": meta["n_items"]}
    for part, n in counts.items():
        for name, arr in sd[part].items():
            if arr.ndim not in (1, 2) or arr.shape[0] != n:
                raise SampleDirError("%s/%s.npy: shape %s, expected %d rows" % (part, name, arr.shape, n))
    tt = sd["test_target"]
    if tt.dtype != np.dtype("<i4") or tt.shape != (meta["n_test_users"],):
        raise SampleDirError("test_target.npy: %s %s, expected int32 [%d]" % (tt.dtype, tt.shape, meta["n_test_users"]))
    ic, uc = meta["item_col"], meta["user_col"]
    if ic not in sd["items"]:
        raise SampleDirError("items/%s.npy missing" % ic)
    if not np.array_equal(sd["items"][ic], np.arange(1, meta["n_items"] + 1)):
        raise SampleDirError("items/%s.npy must hold the ids 1..%d in order" % (ic, meta["n_items"]))
    if uc not in sd["test"]:
        raise SampleDirError("test/%s.npy missing" % uc)
    if tt.size and (tt.min() < 1 or tt.max() > meta["n_items"]):
        raise SampleDirError("test_target.npy: ids outside 1..%d" % meta["n_items"])
    if meta["mode"] == 0 and "label" not in sd["train"]:
        raise SampleDirError("mode 0 (point-wise) needs train/label.npy")

    names = {}
    for key, f in all_features(meta):
        for k in ("type", "name"):
            if k not in f:
                raise SampleDirError("meta.json: a feature in %s has no '%s'" % (key, k))
        if f["type"] not in FEATURE_TYPES:
            raise SampleDirError("meta.json: feature %s has type %r" % (f["name"], f["type"]))
        if f["type"] != "dense" and ("vocab_size" not in f or "embed_dim" not in f):
            raise SampleDirError("meta.json: feature %s needs vocab_size and embed_dim" % f["name"])
        if f["type"] == "sequence" and f.get("pooling", "mean") not in POOLINGS:
            raise SampleDirError("meta.json: feature %s has pooling %r" % (f["name"], f.get("pooling")))
        names[f["name"]] = f
    for key, f in all_features(meta):
        sw = f.get("shared_with")
        if sw is not None:
            if sw not in names:
                raise SampleDirError("meta.json: feature %s is shared_with unknown feature %s" % (f["name"], sw))
            if names[sw].get("shared_with") is not None:
                raise SampleDirError("meta.json: feature %s shares with %s, which itself shares" % (f["name"], sw))
        # where the feature's column must be found, and the id range it must respect
        parts = ["train"]
        if key in ("user_features", "history_features"):
            parts.append("test")
        if key in ("item_features", "sample_weight_feature"):
            parts.append("items")
        for part in parts:
            if f["name"] not in sd[part]:
                raise SampleDirError("%s/%s.npy missing (feature of %s)" % (part, f["name"], key))
            arr = sd[part][f["name"]]
            if f["type"] == "dense":
                if arr.dtype != np.dtype("<f4"):
                    raise SampleDirError("%s/%s.npy: dense feature must be float32" % (part, f["name"]))
                continue
            if arr.dtype != np.dtype("<i4"):
                raise SampleDirError("%s/%s.npy: id feature must be int32, got %s" % (part, f["name"], arr.dtype))
            vocab = names[sw]["vocab_size"] if sw is not None else f["vocab_size"]
            if arr.size and (arr.min() < 0 or arr.max() >= vocab):
                raise SampleDirError("%s/%s.npy: ids in [%d, %d], vocab_size is %d" %
                                     (part, f["name"], arr.min(), arr.max(), vocab))
            want_2d = f["type"] == "sequence"
            if (arr.ndim == 2) != want_2d:
                raise SampleDirError("%s/%s.npy: shape %s does not fit a %s feature" % (part, f["name"], arr.shape,
                                                                                       f["type"]))
    return True
