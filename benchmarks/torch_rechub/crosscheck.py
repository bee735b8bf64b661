#!/usr/bin/env python3
"""Cross-check two sample directories (e.g. rechub's export against Torch-RecHub's own, from
compare.py --from-movielens-100k) for the same model: counts, feature specs, test users' held-out
items and histories, the training (user, target, history) rows, and the negatives' distribution.

    python3 crosscheck.py A B [--json]

Negatives come from each side's own RNG, so they are compared as distributions (total variation
distance between the two sides' negative-item frequencies, and each side's against count^0.75 of
the training targets), never row by row. Histories are compared both as sequences and as multisets:
MovieLens has many ratings with the same (user, timestamp), and Torch-RecHub orders those with an
unstable sort (pandas quicksort), so equal multisets with different orders mean "same items, tie
order differs", not a bug. numpy only.
"""
import argparse
import json
import os
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sample_dir  # noqa: E402


def _nonpad(row):
    return tuple(int(v) for v in row if v != 0)


def _tvd(p, q):
    keys = set(p) | set(q)
    sp, sq = float(sum(p.values())) or 1.0, float(sum(q.values())) or 1.0
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)


def compare(a, b):
    ma, mb = a["meta"], b["meta"]
    ic, uc = ma["item_col"], ma["user_col"]
    hist = "hist_" + ic
    out = {"a": a["path"], "b": b["path"], "model": [ma["model"], mb["model"]], "mode": [ma["mode"], mb["mode"]]}
    for k in ("n_train", "n_test_users", "n_items"):
        out[k] = [ma[k], mb[k]]

    def spec(m):
        return {key: [(f["name"], f["type"], f.get("vocab_size"), f.get("embed_dim"), f.get("pooling"),
                       f.get("shared_with")) for f in m.get(key) or []] for key in sample_dir.FEATURE_LISTS}
    out["feature_specs_equal"] = spec(ma) == spec(mb)
    out["hyper_equal"] = ma["hyper"] == mb["hyper"]
    out["hyper_diff"] = {k: [ma["hyper"].get(k), mb["hyper"].get(k)] for k in set(ma["hyper"]) | set(mb["hyper"])
                         if ma["hyper"].get(k) != mb["hyper"].get(k)}

    # items: the same item ids carry the same item features
    common_item_cols = [c for c in a["items"] if c in b["items"] and c != ic]
    out["item_columns_equal"] = {c: bool(np.array_equal(a["items"][c], b["items"][c])) if
                                 a["items"][c].shape == b["items"][c].shape else False for c in common_item_cols}

    # test users: keyed by user id
    def by_user(sd):
        t = sd["test"]
        res = {}
        for i, u in enumerate(t[uc].tolist()):
            res[u] = (int(sd["test_target"][i]), _nonpad(t[hist][i]) if hist in t else ())
        return res
    ta, tb = by_user(a), by_user(b)
    common = set(ta) & set(tb)
    out["test_users_common"] = len(common)
    out["test_users_only_a"] = len(set(ta) - set(tb))
    out["test_users_only_b"] = len(set(tb) - set(ta))
    out["test_target_equal"] = sum(ta[u][0] == tb[u][0] for u in common)
    out["test_history_equal_sequence"] = sum(ta[u][1] == tb[u][1] for u in common)
    out["test_history_equal_multiset"] = sum(Counter(ta[u][1]) == Counter(tb[u][1]) for u in common)
    # padding side: where the zeros are in the stored rows
    for name, sd in (("a", a), ("b", b)):
        if hist in sd["test"] and len(sd["test"][hist]):
            h = sd["test"][hist]
            out["padding_" + name] = "pre" if (h[:, 0] == 0).sum() >= (h[:, -1] == 0).sum() else "post"

    # training rows: (user, target, history) multisets; negatives and labels summarised separately
    def rows(sd):
        t = sd["train"]
        if "label" in t and sd["meta"]["mode"] == 0:
            keep = t["label"] > 0.5  # the positives; negatives of point-wise rows are sampled
        else:
            keep = np.ones(len(t[uc]), dtype=bool)
        h = t[hist] if hist in t else np.zeros((len(keep), 0), dtype=np.int32)
        return Counter((int(u), int(i), _nonpad(r)) for u, i, r, k in zip(t[uc], t[ic], h, keep) if k)
    ra, rb = rows(a), rows(b)
    inter = sum((ra & rb).values())
    out["train_positive_rows"] = [sum(ra.values()), sum(rb.values())]
    out["train_positive_rows_common"] = inter
    out["train_positive_rows_common_ignoring_history_order"] = sum(
        (Counter((u, i, tuple(sorted(h))) for (u, i, h), c in ra.items() for _ in range(c)) &
         Counter((u, i, tuple(sorted(h))) for (u, i, h), c in rb.items() for _ in range(c))).values())

    # negatives: distribution only
    def negatives(sd):
        t = sd["train"]
        if sd["meta"]["mode"] == 0 and "label" in t:
            return Counter(t[ic][t["label"] < 0.5].tolist())
        for col in ("neg_items", "neg_" + ic):  # list-/pair-wise rows; SASRec's per-position negatives (0 = padding)
            if col in t:
                return Counter(v for v in t[col].reshape(-1).tolist() if v != 0)
        return Counter()
    na, nb = negatives(a), negatives(b)
    out["negatives"] = [sum(na.values()), sum(nb.values())]
    if na and nb:
        targets = Counter(a["train"][ic][a["train"]["label"] > 0.5].tolist()) if ma["mode"] == 0 and \
            "label" in a["train"] else Counter(a["train"][ic].tolist())
        w075 = {k: v**0.75 for k, v in targets.items()}
        out["negatives_tvd_a_b"] = round(_tvd(na, nb), 4)
        out["negatives_tvd_a_vs_count075"] = round(_tvd(na, w075), 4)
        out["negatives_tvd_b_vs_count075"] = round(_tvd(nb, w075), 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    a, b = sample_dir.read_sample_dir(args.a), sample_dir.read_sample_dir(args.b)
    sample_dir.validate(a)
    sample_dir.validate(b)
    res = compare(a, b)
    if not args.json:
        for k, v in res.items():
            print("%-50s %s" % (k, v))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
