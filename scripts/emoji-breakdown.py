#!/usr/bin/env python3
"""Breaks `native-trainer evaluate --rank --items` lines down by emoji group and by kind of
caption (docs/MODELS.md, "What it draws, by kind of prompt").

usage: emoji-breakdown.py CAPTIONS_JSON ITEMS... [--captions ALL_CAPTIONS_ITEMS]
                          [--embed NATIVE_TRAINER MINILM_DIR]

CAPTIONS_JSON is the data folder's captions.json (`scripts/data/fetch.sh emoji-flat`): each
emoji's file, split, group and captions, its label first. ITEMS are `--items` files of one
pack over the same prompts at different seeds (e.g. the training split, whose prompts are the
emoji's labels); the report each `evaluate` printed, saved beside its items as the same name
with `.json` for `.jsonl`, gives the judge's accuracy on the real emoji of each group.
ALL_CAPTIONS_ITEMS is one `--items` file over every training caption (`--real
train-captions`), broken down by kind of caption. With --embed, each prompt is embedded with
the sentence encoder (`native-trainer embed-text`, unit length) and the tables gain how close
each prompt lies to its nearest other prompt (cosine): are the prompts that fail the ones
whose names the encoder hardly tells apart? Needs numpy.
"""
import collections
import json
import os
import statistics
import sys


def read_items(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        if "rank_pixels" not in r or "prompt" not in r:
            sys.exit(f"{path}: lines need prompts and ranks (a text pack, `evaluate --rank --items`)")
    return rows


def pct(x):
    return "—" if x is None else f"{100 * x:.1f} %"


def judge_on_real(items_path):
    """The judge's accuracy on the real images, by class and over all ("all"), from the report
    beside the items."""
    report = os.path.splitext(items_path)[0] + ".json"
    if not os.path.exists(report):
        return {}
    with open(report) as f:
        r = json.load(f)
    real = {c["class"]: c.get("accuracy_real") for c in r.get("per_class", [])}
    real["all"] = r.get("accuracy_real")
    return real


def nearest_cosines(trainer, minilm, prompts):
    """For each prompt, the cosine of its embedding to the nearest other prompt's."""
    import subprocess
    import numpy as np
    rows = []
    for i in range(0, len(prompts), 500):
        done = subprocess.run([trainer, "embed-text", "--text-encoder", minilm, "--", *prompts[i:i + 500]],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{trainer} embed-text failed:\n{done.stderr}")
        rows += json.loads(done.stdout)
    x = np.array(rows, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return sim.max(axis=1).tolist()


def main(argv):
    args = argv[1:]
    embed = None
    if "--embed" in args:
        i = args.index("--embed")
        if i + 2 >= len(args):
            sys.exit(__doc__)
        embed = args[i + 1:i + 3]
        args = args[:i] + args[i + 3:]
    all_caps = None
    if "--captions" in args:
        i = args.index("--captions")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        all_caps = args[i + 1]
        args = args[:i] + args[i + 2:]
    if len(args) < 2:
        sys.exit(__doc__)
    caps_path, item_paths = args[0], args[1:]
    with open(caps_path) as f:
        emoji = {e["file"]: e for e in json.load(f)}
    seeds = [read_items(p) for p in item_paths]
    n = len(seeds[0])
    for s in seeds:
        if [r["prompt"] for r in s] != [r["prompt"] for r in seeds[0]]:
            sys.exit("the items files do not hold the same prompts in the same order")
    real = judge_on_real(item_paths[0])
    cos = nearest_cosines(*embed, [r["prompt"] for r in seeds[0]]) if embed else [None] * n

    # Per emoji: over the seeds, how often the right emoji is the nearest by pixels, in the
    # nearest 5, and in the right group.
    rows = []
    for i in range(n):
        r0 = seeds[0][i]
        ranks = [s[i]["rank_pixels"] for s in seeds]
        rows.append({
            "group": r0["want"],
            "top1": sum(r == 1 for r in ranks) / len(ranks),
            "top5": sum(r <= 5 for r in ranks) / len(ranks),
            "group_ok": sum(s[i]["seen"] == s[i]["want"] for s in seeds) / len(seeds),
            "always": all(r == 1 for r in ranks), "never": all(r > 5 for r in ranks),
            "cos": cos[i],
        })
    by_group = collections.defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)

    print(f"{n} prompts, {len(seeds)} seed(s); ranks among the real images of the folder\n")
    print("| group | emoji | nearest (top-1) | in the nearest 5 | nearest at every seed "
          "| never in the nearest 5 | right group (judge) | the judge on the real ones |"
          + (" nearest other prompt, median cosine |" if embed else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if embed else ""))
    order = sorted(by_group, key=lambda g: -statistics.mean(r["top1"] for r in by_group[g]))
    for g in order + ["all"]:
        rs = rows if g == "all" else by_group[g]
        m = lambda k: statistics.mean(float(r[k]) for r in rs)
        on_real = real.get(g)
        name = "**all**" if g == "all" else g
        cos_col = f" {statistics.median(r['cos'] for r in rs):.3f} |" if embed else ""
        print(f"| {name} | {len(rs)} | {pct(m('top1'))} | {pct(m('top5'))} | {pct(m('always'))} "
              f"| {pct(m('never'))} | {pct(m('group_ok'))} | {pct(on_real)} |{cos_col}")
    if all("nearest_pixels" in r for r in seeds[0]):
        # What a miss draws instead (first items file): the image nearest by pixels, its group.
        print("\n| group | misses (seed of the first file) | nearest is of the same group | distinct images drawn instead |")
        print("|---|---|---|---|")
        for g in order:
            miss = [r for r in seeds[0] if r["want"] == g and r["rank_pixels"] != 1]
            if not miss:
                continue
            same = statistics.mean(emoji.get(r["nearest_pixels"], {}).get("group") == g for r in miss)
            print(f"| {g} | {len(miss)} | {pct(same)} | {len(set(r['nearest_pixels'] for r in miss))} |")
    if embed and n >= 4:
        # Nearest (top-1) by how close a prompt lies to its nearest other prompt, in quarters.
        ranked = sorted(rows, key=lambda r: r["cos"])
        print("\n| nearest other prompt, cosine | prompts | nearest (top-1) |")
        print("|---|---|---|")
        for q in range(4):
            part = ranked[q * n // 4:(q + 1) * n // 4]
            print(f"| {part[0]['cos']:.3f}–{part[-1]['cos']:.3f} | {len(part)} "
                  f"| {pct(statistics.mean(r['top1'] for r in part))} |")

    if all_caps:
        items = read_items(all_caps)
        train = [e for e in emoji.values() if e["split"] == "train"]
        names = collections.Counter(c for e in train for c in set(e["captions"]))
        label_of = {e["file"]: e["captions"][0] for e in train}
        kinds = collections.defaultdict(list)
        for r in items:
            if names[r["prompt"]] > 1:
                kind = "a caption naming two or three emoji (e.g. \"tree\"), each row asking for one"
            elif r["prompt"] == label_of.get(r["file_name"]):
                kind = "the emoji's label (e.g. \"red apple\", \"flag: Japan\")"
            else:
                kind = "another name or keyword of one emoji (e.g. \"car\")"
            kinds[kind].append(r)
        print(f"\n{len(items)} training captions, seed 0\n")
        print("| caption | rows | nearest (top-1) | in the nearest 5 | median rank |")
        print("|---|---|---|---|---|")
        for k, rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            t1 = statistics.mean(r["rank_pixels"] == 1 for r in rs)
            t5 = statistics.mean(r["rank_pixels"] <= 5 for r in rs)
            med = statistics.median(r["rank_pixels"] for r in rs)
            print(f"| {k} | {len(rs)} | {pct(t1)} | {pct(t5)} | {med:g} |")
        shared = collections.defaultdict(list)
        for r in items:
            if names[r["prompt"]] > 1:
                shared[r["prompt"]].append(r)
        if shared:
            hit = statistics.mean(any(r["rank_pixels"] == 1 for r in v) for v in shared.values())
            print(f"\n{len(shared)} captions name two or three emoji; for {pct(hit)} of them the image "
                  "of at least one row is the nearest to the emoji that row asks for")


if __name__ == "__main__":
    main(sys.argv)
