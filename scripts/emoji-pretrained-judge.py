#!/usr/bin/env python3
"""Judges the emoji model with pretrained image features that nobody here trained.

    python3 scripts/emoji-inception-judge.py DATA OUT [--generated DIR] [--recon DIR] [--jobs 2]

DATA is the emoji-flat folder (captions.json, train/, test/, and groups/train-styles/ from
`scripts/data/fetch.sh emoji-styles`). OUT keeps the cached features and the report
(OUT/report.json). Features are Inception-v3's (scripts/inception-features.cjs, from the weights
that scripts/fetch-inception.sh fetches), in four sets: the mean of `mixed5`, the last block
with ImageNet weights (768); the means of `mixed0` to `mixed5` (3,136); `mixed5` over 2×2
regions (3,072); the mean of `mixed10` (2,048, the pool that FID reads).

- The judge: a logistic regression from the features of real training emoji to their group
  (the nine groups of the project's own judge). The feature set, the strength (C) and the
  training images (the Noto emoji alone, or with their Twemoji and Fluent Flat versions) are
  chosen by 5-fold cross-validation on the training emoji alone (folds by emoji, scored on the
  Noto images), then the judge is scored once on the real held-out emoji.
- Generated images: DIR holds what `native-trainer evaluate --items DIR/JOB.jsonl --images
  DIR/JOB` wrote (JOB: train-N or test-N; other files are left alone). Each image is put in a group by the judge,
  and ranked by cosine distance in the judge's features among the real emoji of its split
  (rank 1: its own emoji is the nearest). The Fréchet distance between generated and real
  held-out emoji is given in the `mixed10` pool, with its floor: the mean distance of disjoint
  sets of as many training emoji to the held-out ones (not the standard FID: other weights,
  and 64-pixel images scaled up to 299).
- Reconstructions: DIR/train and DIR/test hold what `native-trainer eval-vqvae --images`
  wrote for the real emoji (`NNNNN-NAME.png`). They are judged and ranked like generated
  images: the most a VAR on this tokenizer could score.

Needs numpy, pillow, scipy and scikit-learn (`pip install numpy pillow scikit-learn`), Node
and npm.
"""
import argparse
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
WIDTH = 3136 + 3072 + 2048 + 5
SETS = {"mixed5": slice(2368, 3136), "mixed0-5": slice(0, 3136), "mixed5-2x2": slice(3136, 6208),
        "mixed10": slice(6208, 8256)}
POOL3 = SETS["mixed10"]


def rgb(path, size=64):
    """The image as the trainer reads it: composited on white, the shorter side resized to
    `size` (Lanczos), centre-cropped, RGB."""
    im = Image.open(path).convert("RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, im).convert("RGB")
    if im.size != (size, size):
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
        left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im)


def features(paths, cache, node_modules, jobs):
    """Inception features of `paths` (rows in order), cached in `cache` (.f32 + .json). The
    cache is used only for the same images (by content) and the same feature script."""
    if not paths:
        sys.exit(f"{cache.name}: no images")
    images = np.stack([rgb(p) for p in paths])
    key = {"paths": [str(p) for p in paths],
           "images_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
           "script_sha256": hashlib.sha256((ROOT / "scripts/inception-features.cjs").read_bytes()).hexdigest()}
    index = cache.with_suffix(".json")
    if cache.exists() and index.exists() and json.loads(index.read_text()) == key:
        return np.fromfile(cache, dtype="<f4").reshape(len(paths), WIDTH)
    n, size = images.shape[0], images.shape[1]
    env = dict(os.environ, NODE_PATH=str(node_modules))
    parts = []
    for k, chunk in enumerate(np.array_split(np.arange(n), max(1, min(jobs, n)))):
        raw, out = cache.with_suffix(f".{k}.u8"), cache.with_suffix(f".{k}.f32")
        images[chunk].tofile(raw)
        proc = subprocess.Popen(
            ["node", str(ROOT / "scripts/inception-features.cjs"), str(raw), str(len(chunk)), str(size),
             str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        parts.append((proc, raw, out))
    rows = []
    for proc, raw, out in parts:
        err = proc.communicate()[1]
        raw.unlink()
        if proc.returncode != 0:
            sys.exit(f"inception-features failed for {cache.name}:\n{err}")
        rows.append(np.fromfile(out, dtype="<f4").reshape(-1, WIDTH))
        out.unlink()
    x = np.concatenate(rows)
    x.tofile(cache)
    index.write_text(json.dumps(key))
    return x


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def rank_of(query, cands, want):
    """1-based rank of cands[want[i]] among all cands by cosine distance to query[i]; a
    candidate exactly as near as the right one does not count against it (20 training emoji
    have the very same features as another one)."""
    sims = unit_rows(query) @ unit_rows(cands).T
    own = sims[np.arange(len(want)), want]
    return 1 + (sims > own[:, None]).sum(axis=1)


def strided_sets(n, size):
    """Disjoint sets of `size` rows of `n`, each taking every k-th row (rows are in code-point
    order, which groups the emoji, so blocks of neighbours would not be samples)."""
    k = n // size
    return list(np.arange(k * size).reshape(size, k).T)


def frechet(a, b):
    from scipy import linalg
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * root.real))


def table(jobs, s, rows, groups, real_test, real_all):
    """A Markdown table by group over the images of `jobs` (one split, any seeds)."""
    group_of = {r["file"]: r["group"] for r in rows}
    items = [i for job in jobs for i in job["items"]]
    head = (f"{'training' if s == 'train' else 'held-out'} labels, {len(jobs)} seed(s): "
            f"{len(items)} images, ranked among {jobs[0]['candidates']} real emoji\n"
            "| group | emoji | nearest (top-1) | in the nearest 5 | right group |"
            + (" the judge on the real ones |" if s == "test" else "") + "\n|---|---|---|---|---|"
            + ("---|" if s == "test" else "") + "\n")
    lines = []
    for g in groups + ["all"]:
        mine = [i for i in items if g in ("all", group_of[i["file_name"]])]
        if not mine:
            continue
        emoji = len({i["file_name"] for i in mine})
        cell = lambda k: f"{100 * k / len(mine):.1f} %"
        line = (f"| {g} | {emoji} | {cell(sum(i['rank'] == 1 for i in mine))} | "
                f"{cell(sum(i['rank'] <= 5 for i in mine))} | {cell(sum(i['seen'] == group_of[i['file_name']] for i in mine))} |")
        if s == "test":
            real = real_all if g == "all" else real_test.get(g)
            line += f" {100 * real:.1f} % |" if real is not None else " |"
        lines.append(line)
    return head + "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=pathlib.Path)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--generated", type=pathlib.Path)
    ap.add_argument("--recon", type=pathlib.Path)
    ap.add_argument("--jobs", type=int, default=2, help="Node processes for the features")
    a = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    node_modules = pathlib.Path(subprocess.run(
        ["bash", str(ROOT / "scripts/fetch-inception.sh")], check=True, capture_output=True,
        text=True).stdout.strip()) / "node_modules"
    a.out.mkdir(parents=True, exist_ok=True)
    rows = json.loads((a.data / "captions.json").read_text())
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
    groups = sorted({r["group"] for r in rows})
    real = {s: features([a.data / s / r["file"] for r in split[s]], a.out / f"real-{s}.f32",
                        node_modules, a.jobs) for s in split}
    y = {s: np.array([groups.index(r["group"]) for r in split[s]]) for s in split}
    # The other art styles of the training emoji: (row of the Noto emoji, features).
    styles_dir = a.data / "groups/train-styles"
    others = sorted(p for p in styles_dir.glob("*/*.png") if not p.name.startswith("noto-"))
    if not others:
        sys.exit(f"{styles_dir}: no Twemoji or Fluent Flat images (run scripts/data/fetch.sh emoji-styles)")
    row_of = {r["file"]: i for i, r in enumerate(split["train"])}
    style_row = np.array([row_of[p.name.split("-", 1)[1]] for p in others])
    style_x = features(others, a.out / "real-train-styles.f32", node_modules, a.jobs)

    def judge_from(rows_used, cols, c, styles):
        x, t = real["train"][rows_used][:, cols], y["train"][rows_used]
        if styles:
            extra = np.isin(style_row, rows_used)
            x = np.concatenate([x, style_x[extra][:, cols]])
            t = np.concatenate([t, y["train"][style_row[extra]]])
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, t)

    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(real["train"], y["train"]))
    # The choice costs about 15 minutes: its scores are kept in OUT/choice.json (delete it to
    # choose again).
    # They are kept only for the same training features, folds and feature sets.
    kept = a.out / "choice.json"
    fingerprint = hashlib.sha256(real["train"].tobytes() + style_x.tobytes() + repr(SETS).encode()
                                 + np.concatenate([f for pair in folds for f in pair]).tobytes()).hexdigest()
    old = json.loads(kept.read_text()) if kept.exists() else {}
    same = isinstance(old, dict) and old.get("fingerprint") == fingerprint
    scores = {tuple(k): v for k, v in old["scores"]} if same else {}
    choices = {}
    for name, cols in SETS.items():
        for styles in (False, True):
            for c in (0.01, 0.1):
                if (name, styles, c) not in scores:
                    scores[(name, styles, c)] = float(np.mean([
                        (judge_from(fit, cols, c, styles).predict(real["train"][held][:, cols])
                         == y["train"][held]).mean() for fit, held in folds]))
                    kept.write_text(json.dumps({"fingerprint": fingerprint,
                                                "scores": [[list(k), v] for k, v in scores.items()]}))
                choices[(name, styles, c)] = scores[(name, styles, c)]
                print(f"cross-validated on the training emoji: {name}, {'three styles' if styles else 'Noto'}, "
                      f"C={c}: {100 * choices[(name, styles, c)]:.1f} %", file=sys.stderr)
    name, styles, c = max(choices, key=choices.get)
    cols = SETS[name]
    judge = judge_from(np.arange(len(y["train"])), cols, c, styles)
    test_pred = judge.predict(real["test"][:, cols])
    report = {
        "features": f"Inception-v3 (nsfwjs 4.4.0 weights), {name}",
        "judge": {"features": name, "styles": "Noto, Twemoji, Fluent Flat" if styles else "Noto", "C": c,
                  "cross_validated": {f"{n}, {'three styles' if st else 'Noto'}, C={cc}": v
                                      for (n, st, cc), v in choices.items()},
                  "accuracy_real_test": float((test_pred == y["test"]).mean()),
                  "per_group_real_test": {g: float((test_pred[y["test"] == i] == i).mean())
                                          for i, g in enumerate(groups) if (y["test"] == i).any()}},
        # The floor at the same sample size: disjoint sets of training emoji, as many as the
        # held-out ones, against the held-out emoji (the distance grows as samples shrink).
        "frechet_pool3_train_vs_test": float(np.mean([
            frechet(real["train"][part][:, POOL3], real["test"][:, POOL3])
            for part in strided_sets(len(y["train"]), len(y["test"]))])),
        "generated": {},
    }
    print(f"judge: {name}, {report['judge']['styles']}, C={c}: {100 * choices[(name, styles, c)]:.1f} % "
          f"cross-validated, {100 * report['judge']['accuracy_real_test']:.1f} % on the real held-out emoji",
          file=sys.stderr)
    if a.generated:
        for items in sorted(a.generated.glob("*.jsonl")):
            job = items.stem
            if not re.fullmatch(r"(train|test)-\d+", job):
                continue  # e.g. the breakdown's captions, written without images
            lines = [json.loads(line) for line in items.read_text().splitlines()]
            s = "test" if job.startswith("test") else "train"
            files = {r["file"]: i for i, r in enumerate(split[s])}
            want_row = np.array([files[line["file_name"]] for line in lines])
            gen = features([a.generated / job / f"{line['index']:05}.png" for line in lines],
                           a.out / f"{job}.f32", node_modules, a.jobs)
            pred = judge.predict(gen[:, cols])
            want = y[s][want_row]
            ranks = rank_of(gen[:, cols], real[s][:, cols], want_row)
            entry = {
                "images": len(lines),
                "right_group": float((pred == want).mean()),
                "nearest_top1": float((ranks == 1).mean()),
                "nearest_top5": float((ranks <= 5).mean()),
                "median_rank": float(np.median(ranks)),
                "candidates": len(files),
                "per_group": {g: float((pred[want == i] == i).mean()) for i, g in enumerate(groups)
                              if (want == i).any()},
                "items": [{"index": line["index"], "file_name": line["file_name"], "seen": groups[p],
                           "rank": int(r)} for line, p, r in zip(lines, pred, ranks)],
            }
            if s == "test":
                entry["frechet_pool3_to_real_test"] = frechet(gen[:, POOL3], real["test"][:, POOL3])
            report["generated"][job] = entry
            print(f"{job}: right group {100 * entry['right_group']:.1f} %, nearest {100 * entry['nearest_top1']:.1f} %, "
                  f"top-5 {100 * entry['nearest_top5']:.1f} % of {len(files)}", file=sys.stderr)
    if a.recon:
        report["reconstructions"] = {}
        for s in ("train", "test"):
            files = {pathlib.Path(r["file"]).stem: i for i, r in enumerate(split[s])}
            paths = sorted((a.recon / s).glob("*.png"))
            if not paths:
                sys.exit(f"{a.recon / s}: no reconstructions (native-trainer eval-vqvae --images)")
            want_row = np.array([files[p.stem.split("-", 1)[1]] for p in paths])
            rec = features(paths, a.out / f"recon-{s}.f32", node_modules, a.jobs)
            pred, want = judge.predict(rec[:, cols]), y[s][want_row]
            ranks = rank_of(rec[:, cols], real[s][:, cols], want_row)
            report["reconstructions"][s] = {
                "images": len(paths), "right_group": float((pred == want).mean()),
                "nearest_top1": float((ranks == 1).mean()), "nearest_top5": float((ranks <= 5).mean()),
                "candidates": len(files),
                "per_group": {g: float((pred[want == i] == i).mean()) for i, g in enumerate(groups)
                              if (want == i).any()}}
            print(f"reconstructions of the real {s} emoji: right group {100 * (pred == want).mean():.1f} %, "
                  f"nearest {100 * (ranks == 1).mean():.1f} %, top-5 {100 * (ranks <= 5).mean():.1f} % "
                  f"of {len(files)}", file=sys.stderr)
    for s in ("train", "test"):
        jobs = [v for k, v in sorted(report["generated"].items()) if k.startswith(s)]
        if jobs:
            print(table(jobs, s, split[s], groups, report["judge"]["per_group_real_test"],
                        report["judge"]["accuracy_real_test"]), file=sys.stderr)
    (a.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    summary = {k: v for k, v in report.items() if k != "generated"}
    summary["generated"] = {k: {kk: vv for kk, vv in v.items() if kk != "items"} for k, v in report["generated"].items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
