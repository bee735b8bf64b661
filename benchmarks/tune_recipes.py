#!/usr/bin/env python3
"""Grid search for rechub recipes on the VALIDATION split (each user's second-to-last item).

    python3 benchmarks/tune_recipes.py --rechub build/examples/rechub --data ../shared/data/ml-100k \
        --model dssm --grid '{"trainer": {"lr": [1e-3, 3e-3]}, "embed_dim": [16, 32]}' [--jobs 1]

Every grid point runs `rechub train --validation --config <point>`; the test items are never
used. Prints one line per point and a final JSON line with every result, best first by NDCG@10.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile


def flatten(grid, prefix=()):
    """{"trainer": {"lr": [a, b]}} -> [(("trainer", "lr"), [a, b])]"""
    out = []
    for k, v in grid.items():
        if isinstance(v, dict):
            out += flatten(v, prefix + (k,))
        else:
            out.append((prefix + (k,), v if isinstance(v, list) else [v]))
    return out


def nest(path, value, into):
    d = into
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rechub", default="build/examples/rechub")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--grid", required=True, help="JSON: nested config keys -> lists of values")
    ap.add_argument("--base", default="{}", help="JSON config applied before the grid point")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    axes = flatten(json.loads(args.grid))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for values in itertools.product(*[v for _, v in axes]):
            cfg = json.loads(args.base)
            for (path, _), val in zip(axes, values):
                nest(path, val, cfg)
            path = os.path.join(tmp, "cfg.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            cmd = [args.rechub, "train", "--model", args.model, "--data", args.data, "--validation",
                   "--config", path, "--out", os.path.join(tmp, "run"), "--threads", args.threads]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print("FAILED", json.dumps(cfg), p.stderr[-500:], file=sys.stderr)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            row = {"config": cfg, **{k: r[k] for k in ("Hit@10", "Hit@50", "Hit@100", "NDCG@10", "epoch_seconds", "popularity_Hit@10", "popularity_Hit@100")}}
            results.append(row)
            print(f"{json.dumps(cfg)}  Hit@10 {r['Hit@10']:.4f} Hit@100 {r['Hit@100']:.4f} "
                  f"NDCG@10 {r['NDCG@10']:.4f} pop {r['popularity_Hit@10']:.4f}/{r['popularity_Hit@100']:.4f} ({r['epoch_seconds']:.1f} s/epoch)", flush=True)
    results.sort(key=lambda r: -r["NDCG@10"])
    print(json.dumps({"model": args.model, "split": "validation", "results": results}))


if __name__ == "__main__":
    main()
