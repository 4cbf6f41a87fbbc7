"""How many of each subset's captions does a CLIP text tower's context cut, and how many lose their class name to it?

    .venv/bin/python benchmarks/check_caption_context.py WORKSPACE [--arch tiny]

For every curate artifact in WORKSPACE (read only) whose corpus is the synthetic world (its world.json names each
concept and its synonyms): every labelled caption of the subset is tokenised with the arch's open_clip tokenizer; a
caption is cut when its tokens do not fit the context (less the start and end tokens), and it loses its class name
when none of the class's name and synonyms (normalised, as whole words) is left in the tokens the cut keeps. One line
per subset. Exit status 1 if any caption loses its class name.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tailstudy.errors import InputError  # noqa: E402
from tailstudy.models.towers import clip_tokenizer  # noqa: E402
from tailstudy.store import Workspace  # noqa: E402
from tailstudy.text import normalise  # noqa: E402


def context_report(captions: list[str], labels: list[int], names: dict[int, list[str]], tokenizer) -> dict:
    """-> labelled captions, those longer than the context, those of them that lose every form of their class name."""
    keep = tokenizer.context_length - 2  # open_clip wraps the tokens in start and end tokens and cuts the middle
    labelled = cut = lost = 0
    for caption, label in zip(captions, labels):
        if label is None or label < 0:  # a label-less (open-world) sample
            continue
        labelled += 1
        tokens = tokenizer.encode(caption or "")
        if len(tokens) <= keep:
            continue
        cut += 1
        kept = f" {normalise(tokenizer.decode(tokens[:keep]))} "
        lost += not any(f" {normalise(form)} " in kept for form in names[label])
    return {"labelled": labelled, "cut": cut, "lost": lost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--arch", default="tiny", help="the open_clip model config whose tokenizer and context to use")
    args = parser.parse_args(argv)
    if not (args.workspace / "curate").is_dir():
        print(f"error: {args.workspace}: not a workspace with curated subsets (no curate/ folder)", file=sys.stderr)
        return 2
    ws = Workspace(args.workspace)
    tokenizer = clip_tokenizer(args.arch)
    any_lost = False
    for subset in sorted((ws.root / "curate").iterdir()):
        if not (subset / "manifest.json").is_file():
            continue  # a build in progress or a leftover temporary folder
        try:
            inputs = ws.artifact("curate", subset.name).manifest()["inputs"]
        except InputError as err:
            print(f"{subset.name}: skipped ({err})")
            continue
        world = ws.root / "corpus" / inputs["corpus"] / "world.json"
        if not world.is_file():
            print(f"{subset.name}: not the synthetic world (no world.json): skipped")
            continue
        names = {c["concept_id"]: [c["name"], *c["synonyms"]] for c in json.loads(world.read_text())["concepts"]}
        table = pq.read_table(subset / "subset.parquet", columns=["label", "caption"])
        got = context_report(table.column("caption").to_pylist(), table.column("label").to_pylist(), names, tokenizer)
        any_lost |= got["lost"] > 0
        share = got["cut"] / got["labelled"] if got["labelled"] else 0.0
        print(f"{subset.name} caption={inputs['subset']['caption']}: {got['labelled']:,} labelled captions, "
              f"{got['cut']:,} ({share:.1%}) longer than the {tokenizer.context_length}-token context of {args.arch}, "
              f"{got['lost']:,} of them lose their class name")
    return 1 if any_lost else 0


if __name__ == "__main__":
    sys.exit(main())
