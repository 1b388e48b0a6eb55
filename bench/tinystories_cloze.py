#!/usr/bin/env python3
"""bench/tinystories_cloze.py — a seeded TinyStories cloze task for
`slicepipe eval --task` (JSONL, one item a line).

HellaSwag sits at chance for the project's small story models; this task
discriminates between them. Each item asks which sentence comes next in a
story:

  stories    the input text is split into stories where a blank line is
             followed by a usual story opening ("Once upon", "One day",
             "Once there", "There was", "Once,", "Long ago", "In a "), the
             rule tests/test_tokenizer.py uses for the shared files; line
             breaks inside a story become spaces.
  sentences  a story is split after ".", "!" or "?" (and a closing quote)
             followed by whitespace and an upper-case letter or a quote.
  items      for each story with at least 3 sentences, in file order: the cut
             k is drawn from 2..min(6, n-1) (n sentences); the context is
             sentences 0..k-1 joined by single spaces; the gold choice is
             sentence k; 3 distractors are drawn from the sentences of the
             other stories whose length is within 0.5x..2x the gold's in
             characters (so length alone does not give the answer), distinct
             and different from the gold; the 4 choices are shuffled.
  random     one random.Random(seed) drives every draw, in that order, so
             the same input, seed and --items give the same file.

  python3 bench/tinystories_cloze.py ../shared/data/tinystories/eval.txt -o cloze.jsonl [--seed 23] [--items N]

Chance is 25%; lm-eval's scoring (acc, acc_norm) applies as to any task.
"""
import argparse
import json
import random
import re
import sys

STORY_START = re.compile(r"\n\n(?=Once upon|One day|Once there|There was|Once,|Long ago|In a )")
SENT_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[A-Z\"])")


def stories(text):
    out = []
    for s in STORY_START.split(text):
        s = " ".join(s.split())
        if s:
            out.append(s)
    return out


def sentences(story):
    # keep a closing quote with its sentence: split after it
    parts, last = [], 0
    for m in SENT_END.finditer(story):
        end = m.start() + (1 if story[m.start()] in "\"'" else 0)
        parts.append(story[last:end].strip())
        last = m.end()
    parts.append(story[last:].strip())
    return [p for p in parts if p]


def build(text, seed, n_items):
    rng = random.Random(seed)
    sts = [sentences(s) for s in stories(text)]
    items = []
    for si, ss in enumerate(sts):
        if len(ss) < 3:
            continue
        if n_items and len(items) == n_items:
            break
        k = rng.randint(2, min(6, len(ss) - 1))
        gold = ss[k]
        pool = [x for sj, o in enumerate(sts) if sj != si for x in o
                if 0.5 * len(gold) <= len(x) <= 2 * len(gold) and x != gold]
        distract = []
        while len(distract) < 3:
            x = pool[rng.randrange(len(pool))]
            if x not in distract:
                distract.append(x)
        choices = [gold] + distract
        rng.shuffle(choices)
        items.append({"context": " ".join(ss[:k]), "choices": choices, "gold": choices.index(gold), "story": si + 1})
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--items", type=int, default=0, help="at most this many items (default: every story)")
    a = ap.parse_args()
    with open(a.text, encoding="utf-8") as f:
        items = build(f.read(), a.seed, a.items)
    if not items:
        sys.exit("%s: no story with 3 sentences" % a.text)
    with open(a.output, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    print("%s: %d items (seed %d)" % (a.output, len(items), a.seed))


if __name__ == "__main__":
    main()
