"""Interval methods side by side, chosen without the held-out tracks, reported on them.

Each method is a variant of :mod:`epitensor.estimators.intervals`' split
conformal calibration (per assay, on the training tracks each recomputed as if
missing, the left-out average standing in for the network):

* ``norm``: the shipped one, residual / (b0 + b1 imputed + b2 |trees - average|);
* ``mond4``: ``norm`` per assay x 4 bins of the imputed value (Mondrian; edges at
  its 50, 90 and 99% quantiles);
* ``room``: separate lower and upper scales, the upper with ``max(trees, average) -
  imputed``;
* ``maxroom`` / ``maxroom1``: with ``max over the other cell types - imputed`` (the
  assay's strongest signal elsewhere), split tails or one scale;
* ``trkmax``, ``mond4max``, ``roommax``, ``maxroommax``: quantiles per calibration
  track, the most extreme taken (tracks as the exchangeable unit).

**Selection** (``SEL`` lines): leave one cell type out of the model's training
tracks (calibrate on the other cell types' tracks, score the left-out cell type's,
the stand-in on both sides): never sees the held-out tracks. **Report**:
calibrated on all training tracks, scored on the held-out tracks around the
ensemble with the network. Calibration bins: every 5th position.

Run (under the heavy-jobs lock; the parts of 25 tracks take minutes, then kept)::

    python benchmarks/interval_methods.py --model demo-output/model --parts parts.npz \
        [--methods norm,mond4,trkmax]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np

import epitensor as et
from epitensor.estimators.ensemble import EnsembleRule
from epitensor.evaluation.metrics import top_fraction

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", required=True, help="model directory (trained with holdout)")
parser.add_argument("--store", default="roadmap-pilot")
parser.add_argument("--parts", default="interval_parts.npz",
                    help="the model's, trees' and average's imputations (made if absent)")  # fmt: skip
parser.add_argument("--methods", default="norm,mond4,room,trkmax,maxroom1")
args = parser.parse_args()
store = et.open_store(args.store)
cfg = json.loads((Path(args.model) / "config.json").read_text())
hold = [tuple(t) for t in cfg["holdout_tracks_"]]
train = [tuple(t) for t in cfg["training_tracks_"]]
if not Path(args.parts).is_file():
    from epitensor.estimators.avocado import load_model
    from epitensor.estimators.ensemble import Ensemble

    model = load_model(args.model)
    ensemble = Ensemble(model, store)
    axis = store.axes[0]
    parts = {}
    for c, a in hold + train:
        parts[f"{c}.{a}.m"] = model.predict(c, a, axis)
        parts[f"{c}.{a}.g"] = ensemble.trees.predict(c, a, axis)
        parts[f"{c}.{a}.a"] = ensemble.average.predict(c, a, axis)
    np.savez(args.parts, **parts)
P = np.load(args.parts)
rule = EnsembleRule()
Y = {t: store.read_track(*t).astype(np.float32) for t in hold + train}
n_assay = {a: sum(1 for c, b in train if b == a) for _, a in train}
GRID = np.linspace(0, 1, 401)
rng = np.random.default_rng(0)
STRIDE = 5


def gate(av):
    return np.quantile(av, rule.gate) if rule.gate > 0 else -np.inf


def other_max(t, stride):
    c, a = t
    others = [Y[u][::stride] for u in train if u[1] == a and u[0] != c]
    return np.max(np.stack(others), 0)


def cal_sample(t, loo_from):
    # training track as if missing: trees as they are, average without it, stand-in = left-out average
    c, a = t
    y = Y[t][::STRIDE]
    g = P[f"{c}.{a}.g"][::STRIDE]
    av = P[f"{c}.{a}.a"][::STRIDE]
    n = n_assay[a]
    aloo = ((n * av - y) / (n - 1)).astype(np.float32)
    return dict(y=y, p=rule.combine(aloo, g, aloo, -np.inf), g=g, a=aloo, mx=other_max(t, STRIDE))


def test_sample(t):
    c, a = t
    g = P[f"{c}.{a}.g"]
    av = P[f"{c}.{a}.a"]
    return dict(
        y=Y[t], p=rule.combine(P[f"{c}.{a}.m"], g, av, gate(av)), g=g, a=av, mx=other_max(t, 1)
    )


def feats(s, kind):
    p, g, a = s["p"], s["g"], s["a"]
    cols = [np.ones_like(p), np.maximum(p, 0), np.abs(g - a)]
    if kind == "room":
        cols.append(np.maximum(np.maximum(g, a) - p, 0))
    if kind == "maxroom":
        cols.append(np.maximum(s["mx"] - p, 0))
    return np.stack(cols, 1).astype(np.float64)


def lsq(X, r):
    idx = rng.choice(len(r), min(len(r), 300_000), replace=False)
    coef, *_ = np.linalg.lstsq(X[idx], r[idx], rcond=None)
    coef = np.maximum(coef, 0)
    coef[0] = max(coef[0], 1e-3)
    return coef


def cat(samples, k):
    return np.concatenate([s[k] for s in samples])


class Method:
    def __init__(self, feat="base", groups=0, track_combine=None, split_tails=False, topw=0.0):
        self.feat, self.groups, self.tc, self.split, self.topw = (
            feat,
            groups,
            track_combine,
            split_tails,
            topw,
        )

    def fit(self, samples):
        X = np.concatenate([feats(s, self.feat) for s in samples])
        r = cat(samples, "y") - cat(samples, "p")
        p = cat(samples, "p")
        if self.split:
            self.cl = lsq(X, np.maximum(-r, 0))
            self.cu = lsq(X, np.maximum(r, 0))
        else:
            self.cl = self.cu = lsq(X, np.abs(r))
        sl, su = X @ self.cl, X @ self.cu
        self.edges = (
            np.quantile(p, [0.5, 0.9, 0.99])[: self.groups - 1] if self.groups > 1 else np.array([])
        )
        grp = np.searchsorted(self.edges, p)
        zl, zu = r / sl, r / su
        bounds = np.cumsum([0] + [len(s["y"]) for s in samples])
        self.ql, self.qu = [], []
        for k in range(max(self.groups, 1)):
            if self.tc is None:
                m = grp == k
                self.ql.append(np.quantile(zl[m], GRID))
                self.qu.append(np.quantile(zu[m], GRID))
            else:
                per = []
                for i in range(len(samples)):
                    m = grp[bounds[i] : bounds[i + 1]] == k
                    if m.sum() < 50:
                        continue
                    per.append(
                        (
                            np.quantile(zl[bounds[i] : bounds[i + 1]][m], GRID),
                            np.quantile(zu[bounds[i] : bounds[i + 1]][m], GRID),
                        )
                    )
                lo = np.stack([x[0] for x in per])
                hi = np.stack([x[1] for x in per])
                if self.tc == "max":
                    self.ql.append(np.where(GRID < 0.5, lo.min(0), lo.max(0)))
                    self.qu.append(np.where(GRID < 0.5, hi.min(0), hi.max(0)))
                else:
                    self.ql.append(lo.mean(0))
                    self.qu.append(hi.mean(0))
        ra = np.abs(r)
        self.const = np.quantile(ra, GRID)
        return self

    def bounds(self, s, level):
        X = feats(s, self.feat)
        p = s["p"].astype(np.float64)
        grp = np.searchsorted(self.edges, p)
        lo_q = np.array([np.interp((1 - level) / 2, GRID, q) for q in self.ql])[grp]
        hi_q = np.array([np.interp((1 + level) / 2, GRID, q) for q in self.qu])[grp]
        lo = p + lo_q * (X @ self.cl)
        hi = p + hi_q * (X @ self.cu)
        return np.minimum(np.maximum(lo, 0), p), np.maximum(hi, p)

    def const_bounds(self, s, level):
        h = np.interp(level, GRID, self.const)
        p = s["p"]
        return np.maximum(p - h, 0), p + h


def score(y, lo, hi, level):
    al = 1 - level
    return np.mean((lo <= y) & (y <= hi)), np.mean(
        hi - lo + 2 / al * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))
    )


def evaluate(method, calsets, tests, label):
    fitted = {a: Method(**method).fit(calsets[a]) for a in calsets}
    out = {}
    for level in (0.8, 0.9):
        rows = []
        for t, s in tests:
            lo, hi = fitted[t[1]].bounds(s, level)
            clo, chi = fitted[t[1]].const_bounds(s, level)
            top = top_fraction(s["y"], 0.01)
            rows.append(
                (
                    t,
                    *score(s["y"], lo, hi, level),
                    *score(s["y"][top], lo[top], hi[top], level),
                    *score(s["y"], clo, chi, level),
                )
            )
        cov = np.mean([r[1] for r in rows])
        wk = np.mean([r[2] for r in rows])
        tcov = np.mean([r[3] for r in rows])
        cwk = np.mean([r[6] for r in rows])
        per = {}
        for r in rows:
            per.setdefault(r[0][1], []).append((r[1], r[2], r[6]))
        pa = {a: np.mean(v, 0) for a, v in per.items()}
        worst = max(abs(v[0] - level) for v in pa.values())
        beats = all(v[1] < v[2] for v in pa.values())
        out[level] = (cov, tcov, worst, wk / cwk, beats)
        print(
            f"{label:9s} {level}: cov {cov:.3f} top1 {tcov:.3f} worst-assay-dev {worst:.3f} wk/const {wk / cwk:.3f} beats-per-assay {beats} | "
            + " ".join(f"{a[:8]}={v[0]:.2f}" for a, v in sorted(pa.items())),
            flush=True,
        )
    return out


METHODS = {
    "norm": dict(),
    "maxroom": dict(feat="maxroom", split_tails=True),
    "maxroom1": dict(feat="maxroom"),
    "maxroommax": dict(feat="maxroom", split_tails=True, track_combine="max"),
    "mond3": dict(groups=3),
    "mond4": dict(groups=4),
    "room": dict(feat="room", split_tails=True),
    "roommond": dict(feat="room", split_tails=True, groups=4),
    "trkmax": dict(track_combine="max"),
    "trkmean": dict(track_combine="mean"),
    "mond4max": dict(groups=4, track_combine="max"),
    "roommax": dict(feat="room", split_tails=True, groups=4, track_combine="max"),
}
which = args.methods.split(",")
cal_all = {t: cal_sample(t, None) for t in train}
print("== selection: leave one cell type out of the training tracks (proxy ensemble both sides)")
for name in which:
    allrows = []
    for c in sorted({c for c, _ in train}):
        calsets = {}
        for t in train:
            if t[0] != c:
                calsets.setdefault(t[1], []).append(cal_all[t])
        tests = [(t, cal_all[t]) for t in train if t[0] == c]
        allrows.append((c, calsets, tests))
    # pool tests over folds: fit per fold, score per track, average
    agg = {0.8: [], 0.9: []}
    for _c, calsets, tests in allrows:
        with contextlib.redirect_stdout(io.StringIO()):
            o = evaluate(METHODS[name], calsets, tests, name)
        for lv in o:
            agg[lv].append(o[lv])
    for lv in (0.8, 0.9):
        a = np.array([x[:4] for x in agg[lv]])
        print(
            f"SEL {name:9s} {lv}: cov {a[:, 0].mean():.3f} top1 {a[:, 1].mean():.3f} worst-assay-dev(max over folds) {a[:, 2].max():.3f} wk/const {a[:, 3].mean():.3f}",
            flush=True,
        )
print(
    "== report: calibrated on all 20 training tracks, scored on the 5 held-out tracks (network ensemble)"
)
calsets = {}
for t in train:
    calsets.setdefault(t[1], []).append(cal_all[t])
tests = [(t, test_sample(t)) for t in hold]
for name in which:
    evaluate(METHODS[name], calsets, tests, name)
