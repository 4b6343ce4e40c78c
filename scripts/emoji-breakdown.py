#!/usr/bin/env python3
"""Breaks `native-trainer evaluate --rank --items` lines down by emoji group and by kind of
caption (docs/MODELS.md, "What it draws, by kind of prompt").

usage: emoji-breakdown.py CAPTIONS_JSON LABELS_ITEMS... [--captions ALL_CAPTIONS_ITEMS]

CAPTIONS_JSON is the data folder's captions.json (`scripts/data/fetch.sh emoji-flat`): each
emoji's file, group and captions, its label first. LABELS_ITEMS are `--items` files of one
pack over the same prompts at different seeds (e.g. the training split, whose prompts are the
labels). ALL_CAPTIONS_ITEMS is one `--items` file over every training caption.
"""
import collections
import json
import statistics
import sys


def read_items(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(x):
    return f"{100 * x:.1f} %"


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    caps_path, rest = argv[1], argv[2:]
    all_caps = None
    if "--captions" in rest:
        i = rest.index("--captions")
        all_caps = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    emoji = {e["file"]: e for e in json.load(open(caps_path))}
    seeds = [read_items(p) for p in rest]
    n = len(seeds[0])
    for s in seeds:
        if [r["prompt"] for r in s] != [r["prompt"] for r in seeds[0]]:
            sys.exit("the items files do not hold the same prompts in the same order")

    # Per emoji: over the seeds, how often the right emoji is the nearest by pixels, in the
    # top 5, and in the right group.
    rows = []
    for i in range(n):
        r0 = seeds[0][i]
        ranks = [s[i]["rank_pixels"] for s in seeds]
        rows.append({
            "file": r0["file_name"], "prompt": r0["prompt"], "group": r0["want"],
            "top1": sum(r == 1 for r in ranks) / len(ranks),
            "top5": sum(r <= 5 for r in ranks) / len(ranks),
            "group_ok": sum(s[i]["seen"] == s[i]["want"] for s in seeds) / len(seeds),
            "always": all(r == 1 for r in ranks), "never": all(r > 5 for r in ranks),
            "median_rank": statistics.median(ranks),
        })
    by_group = collections.defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)

    print(f"{n} prompts, {len(seeds)} seed(s)\n")
    print("| group | emoji | the nearest by pixels (top-1) | in the top 5 | at every seed | never in the top 5 | right group (judge) |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(by_group, key=lambda g: -statistics.mean(r["top1"] for r in by_group[g]))
    for g in order + ["all"]:
        rs = rows if g == "all" else by_group[g]
        m = lambda k: statistics.mean(float(r[k]) for r in rs)
        name = "**all**" if g == "all" else g
        print(f"| {name} | {len(rs)} | {pct(m('top1'))} | {pct(m('top5'))} | {pct(m('always'))} | {pct(m('never'))} | {pct(m('group_ok'))} |")

    if all_caps:
        items = read_items(all_caps)
        label_of = {f: e["captions"][0] for f, e in emoji.items()}
        count = collections.Counter(r["prompt"] for r in items)
        kinds = collections.defaultdict(list)
        for r in items:
            if r["prompt"] == label_of.get(r["file_name"]):
                kind = "the emoji's label (e.g. \"red apple\")"
            elif count[r["prompt"]] > 1:
                kind = "a keyword shared by two emoji"
            else:
                kind = "another name or keyword of one emoji"
            kinds[kind].append(r)
        print(f"\n{len(items)} training captions, seed 0\n")
        print("| caption | captions | the nearest by pixels (top-1) | in the top 5 | median rank |")
        print("|---|---|---|---|---|")
        for k, rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            t1 = statistics.mean(r["rank_pixels"] == 1 for r in rs)
            t5 = statistics.mean(r["rank_pixels"] <= 5 for r in rs)
            med = statistics.median(r["rank_pixels"] for r in rs)
            print(f"| {k} | {len(rs)} | {pct(t1)} | {pct(t5)} | {med:g} |")


if __name__ == "__main__":
    main(sys.argv)
