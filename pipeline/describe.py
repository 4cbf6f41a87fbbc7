"""How descriptive each concept's captions are (ours, after the paper's caption factor): the describe stage.

For every concept of a match artifact whose captions are indexed (``tailstudy match --index``), over the captions it
matched (words = the words of ``tailstudy.text.normalise(caption)``):

- ``captions``; ``mean_words`` and the 10th / 50th / 90th percentiles of the caption length in words;
- ``mean_extra_words`` and ``median_extra_words``: words beyond the concept's name, max(0, words - words of the
  normalised name);
- ``template_like``: captions that are nothing but a template around one of the concept's names: the normalised
  caption equals the normalised ``template.format(form)`` for one of the 80 OpenAI ImageNet templates (open_clip's
  ``OPENAI_IMAGENET_TEMPLATES``) or the bare patterns "{}", "a {}", "an {}", "the {}", and a form of one of the
  concept's synonyms (the synonym or the plural forms the phrase matcher uses); ``template_share`` = template_like /
  captions.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.matching.phrase import inflections
from tailstudy.text import normalise
from tailstudy.vocab import Vocabulary

DESCRIBE_VERSION = 1
BARE_PATTERNS = ("{}", "a {}", "an {}", "the {}")


@lru_cache(maxsize=1)
def openai_templates() -> tuple[str, ...]:
    """open_clip's 80 OpenAI ImageNet templates, read from its metadata module without importing open_clip (torch)."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.submodule_search_locations[0]) / "zero_shot_metadata.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return tuple(t("{}") for t in module.OPENAI_IMAGENET_TEMPLATES)


def template_texts(vocab: Vocabulary) -> pa.Table:
    """(concept_id, normalised text) of every template-like caption of every concept."""
    patterns = (*BARE_PATTERNS, *openai_templates())
    ids, texts = [], []
    for concept in vocab.concepts:
        forms = {f for s in concept.synonyms if normalise(s) for f in inflections(normalise(s))}
        found = {normalise(p.format(form)) for p in patterns for form in forms}
        ids += [concept.concept_id] * len(found)
        texts += sorted(found)
    return pa.table({"concept_id": pa.array(ids, pa.int32()), "normalised": pa.array(texts, pa.string()),
                     "template": pa.array([True] * len(ids))})


def word_counts(normalised: pa.Array) -> np.ndarray:
    """Words of each normalised caption (single spaces between words, none at the ends)."""
    spaces = pc.count_substring(normalised, " ").to_numpy(zero_copy_only=False)
    return np.where(pc.binary_length(normalised).to_numpy(zero_copy_only=False) > 0, spaces + 1, 0)


def concept_descriptiveness(matches: pa.Table, captions: pa.Table, vocab: Vocabulary) -> pa.Table:
    """matches (sample_id, concept_id) + indexed captions (sample_id, normalised) -> one row per concept."""
    pairs = matches.select(["sample_id", "concept_id"]).group_by(["sample_id", "concept_id"]).aggregate([])
    joined = pairs.join(captions.select(["sample_id", "normalised"]), "sample_id", join_type="inner")
    joined = joined.join(template_texts(vocab), ["concept_id", "normalised"], join_type="left outer")
    concept = joined.column("concept_id").to_numpy()
    words = word_counts(joined.column("normalised").combine_chunks())
    template = joined.column("template").fill_null(False).to_numpy(zero_copy_only=False)
    rows = []
    for c in vocab.concepts:
        mine = concept == c.concept_id
        w, name_words = words[mine], len(normalise(c.name).split())
        extra = np.maximum(w - name_words, 0)
        n = int(mine.sum())
        p10, p50, p90 = (np.percentile(w, [10, 50, 90]) if n else (np.nan,) * 3)
        rows.append({"concept_id": c.concept_id, "name": c.name, "captions": n,
                     "mean_words": float(w.mean()) if n else np.nan, "p10_words": float(p10),
                     "median_words": float(p50), "p90_words": float(p90),
                     "mean_extra_words": float(extra.mean()) if n else np.nan,
                     "median_extra_words": float(np.median(extra)) if n else np.nan,
                     "template_like": int(template[mine].sum()),
                     "template_share": float(template[mine].mean()) if n else np.nan})
    return pa.Table.from_pylist(rows)


def pick_by_descriptiveness(texts: list[str], most: bool) -> str:
    """Of a sample's caption fields (caption, title, tags, description), the one with the most (or fewest) normalised
    words; empty fields are skipped, the first wins a tie, all empty -> ''."""
    scored = [(len(normalise(t).split()), i, t) for i, t in enumerate(texts) if normalise(t)]
    if not scored:
        return ""
    return (max(scored, key=lambda s: (s[0], -s[1])) if most else min(scored, key=lambda s: (s[0], s[1])))[2]
