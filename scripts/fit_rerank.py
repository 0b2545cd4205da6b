#!/usr/bin/env python3
"""Fits the catalog reranker (src/pipeline/rerank.rs) from an eval report.

    voice-search eval --manifest ../shared/eval/manifest.jsonl --report eval.json
    python3 scripts/fit_rerank.py eval.json [--out models/rerank.json]

Every candidate of every transcribed clip is one row: its features (as the report's
`decision.candidates[].features` gives them) and whether it is the clip's expected
document. Clips without one (conversation, out-of-catalog speech) give negatives only,
which teaches the model when nothing should be trusted. The model is an L2-regularized
logistic regression, fitted by Newton's method; no third-party packages.

The figures printed are cross-validated three ways, each fold scored by a model fitted on
the others: by target document (both clips of one target in the same fold), leaving one
voice out (the speaker's family, as the eval reports it), and by wording template (the
query's first two words, its carrier). The regularization is chosen on the worst of the
three, so that what is kept generalizes to other voices and other wording, not only to
other targets. The hits are always in the model's order; how sure it is is the
confidence, whose calibration is printed. The weights written are then fitted on all
clips with the chosen regularization.
"""

import argparse
import json
import math
import random

# Filled from the reports' own feature names, so the list is written once, in Rust.
FEATURES = []
L2_CHOICES = [0.01, 0.1, 1.0, 10.0]
GROUPINGS = ["target", "voice", "template"]
BINS = 10


def feature_names(paths):
    """The features in the order the pipeline writes them (src/pipeline/rerank.rs)."""
    for path in paths:
        for clip in json.load(open(path))["clips"]:
            for candidate in (clip.get("decision") or {}).get("candidates", []):
                return list(candidate["features"])
    raise SystemExit("no candidates in the reports: run eval in process, with catalog biasing")


def load(path):
    report = json.load(open(path))
    clips = []
    for clip in report["clips"]:
        decision = clip.get("decision")
        if not decision or not decision["candidates"]:
            continue
        rows = [
            (
                [float(c["features"][f]) for f in FEATURES],
                c["id"] == clip.get("expected_doc"),
                c["id"],
            )
            for c in decision["candidates"]
        ]
        clips.append(
            {
                "id": clip["id"],
                "expected": clip.get("expected_doc"),
                "target": clip.get("expected_doc") or clip["id"],
                "voice": clip.get("voice") or "unknown",
                "template": " ".join(clip.get("reference", "").lower().split()[:2]) or "none",
                "condition": clip.get("condition", ""),
                "rows": rows,
            }
        )
    return clips


def sigmoid(z):
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def solve(matrix, vector):
    """Gaussian elimination with partial pivoting."""
    n = len(vector)
    a = [row[:] + [vector[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        if abs(a[col][col]) < 1e-12:
            continue
        for r in range(n):
            if r != col:
                factor = a[r][col] / a[col][col]
                for c in range(col, n + 1):
                    a[r][c] -= factor * a[col][c]
    return [a[i][n] / a[i][i] if abs(a[i][i]) > 1e-12 else 0.0 for i in range(n)]


def fit(clips, l2):
    """Weights and bias of an L2-regularized logistic regression (bias not penalized)."""
    rows = [(x + [1.0], float(y)) for clip in clips for x, y, _ in clip["rows"]]
    n = len(FEATURES) + 1
    w = [0.0] * n
    for _ in range(50):
        gradient = [0.0] * n
        hessian = [[0.0] * n for _ in range(n)]
        for x, y in rows:
            p = sigmoid(sum(a * b for a, b in zip(w, x)))
            for i in range(n):
                gradient[i] += (p - y) * x[i]
                for j in range(n):
                    hessian[i][j] += p * (1 - p) * x[i] * x[j]
        for i in range(n - 1):
            gradient[i] += l2 * w[i]
            hessian[i][i] += l2
        step = solve(hessian, gradient)
        w = [a - b for a, b in zip(w, step)]
        if max(abs(s) for s in step) < 1e-6:
            break
    return w[:-1], w[-1]


def confidence(weights, bias, x):
    return sigmoid(bias + sum(a * b for a, b in zip(weights, x)))


def decide(clip, weights, bias):
    """(first hit id, its confidence) as the pipeline decides."""
    best = max((confidence(weights, bias, x), doc) for x, _, doc in clip["rows"])
    return best[1], best[0]


def folds_of(clips, grouping, k, seed):
    """Folds with each group whole: every voice its own fold, else `k` folds."""
    groups = sorted({c[grouping] for c in clips})
    random.Random(seed).shuffle(groups)
    count = len(groups) if grouping == "voice" else k
    fold_of = {g: i % count for i, g in enumerate(groups)}
    return [[c for c in clips if fold_of[c[grouping]] == i] for i in range(count)]


def held_out(clips, grouping, k, seed, l2):
    """Per clip: the held-out model's weights, fitted without the clip's fold."""
    models = {}
    folds = folds_of(clips, grouping, k, seed)
    for i, fold in enumerate(folds):
        train = [c for j, f in enumerate(folds) if j != i for c in f]
        model = fit(train, l2)
        for clip in fold:
            models[clip["id"]] = model
    return models


def evaluate(clips, models):
    queries = [c for c in clips if c["expected"]]
    top1 = 0
    outcomes = []
    for clip in clips:
        weights, bias = models[clip["id"]]
        first, conf = decide(clip, weights, bias)
        correct = clip["expected"] is not None and first == clip["expected"]
        top1 += correct
        outcomes.append((conf, correct))
    return top1 / max(1, len(queries)), outcomes


def reliability(outcomes):
    table = []
    ece = 0.0
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        inside = [(c, ok) for c, ok in outcomes if lo <= c < hi or (b == BINS - 1 and c == 1.0)]
        if not inside:
            continue
        mean_conf = sum(c for c, _ in inside) / len(inside)
        accuracy = sum(ok for _, ok in inside) / len(inside)
        ece += len(inside) / len(outcomes) * abs(mean_conf - accuracy)
        table.append((lo, hi, len(inside), mean_conf, accuracy))
    return table, ece


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="+", help="eval --report JSON (in-process runs)")
    parser.add_argument("--out", default="models/rerank.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    global FEATURES
    FEATURES = feature_names(args.report)
    clips = [clip for path in args.report for clip in load(path)]
    queries = sum(1 for c in clips if c["expected"])
    print(f"{len(clips)} clips ({queries} queries), {sum(len(c['rows']) for c in clips)} candidates")
    print("| L2 | " + " | ".join(f"top-1 by {g}" for g in GROUPINGS) + " | worst |")
    print("| --- |" + " --- |" * (len(GROUPINGS) + 1))
    scored = []
    for l2 in L2_CHOICES:
        results = {g: evaluate(clips, held_out(clips, g, args.folds, args.seed, l2)) for g in GROUPINGS}
        worst = min(top1 for top1, _ in results.values())
        print(f"| {l2} | " + " | ".join(f"{results[g][0]:.3f}" for g in GROUPINGS) + f" | {worst:.3f} |")
        scored.append((worst, l2, results))
    # The best worst case; among equals, the stronger regularization.
    worst, l2, results = max(scored, key=lambda s: (s[0], s[1]))
    top1, outcomes = results["target"]
    table, ece = reliability(outcomes)
    print(f"\nchosen L2 {l2}: worst held-out top-1 {worst:.3f}; by target {top1:.3f}, ECE {ece:.3f}")
    print("| confidence | clips | mean confidence | share right |")
    print("| --- | --- | --- | --- |")
    for lo, hi, n, mean_conf, accuracy in table:
        print(f"| {lo:.1f}-{hi:.1f} | {n} | {mean_conf:.2f} | {accuracy:.2f} |")

    weights, bias = fit(clips, l2)
    model = {
        "features": FEATURES,
        "weights": [round(w, 5) for w in weights],
        "bias": round(bias, 5),
        "fit": {
            "reports": args.report,
            "clips": len(clips),
            "queries": queries,
            "folds": args.folds,
            "l2": l2,
            "held_out_top1": round(top1, 4),
            "held_out_top1_worst_grouping": round(worst, 4),
            "held_out_ece": round(ece, 4),
        },
    }
    with open(args.out, "w") as out:
        json.dump(model, out, indent=2)
        out.write("\n")
    print(f"\nweights written to {args.out}")
    for name, w in zip(FEATURES, weights):
        print(f"  {name:<16} {w:+.3f}")
    print(f"  {'bias':<16} {bias:+.3f}")


if __name__ == "__main__":
    main()
