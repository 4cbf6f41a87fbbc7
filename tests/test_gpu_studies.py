"""The GPU study specs shipped in data/studies parse, carry the paper's training setup, and plan (every stage key up
to the subsets) once their paths point at data: here tiny stand-ins, nothing is downloaded or trained."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tailstudy.paths import DATA_DIR
from tailstudy.spec import load_spec, parse_spec
from tailstudy.stages import plan_study

WNIDS = ("n01440764", "n01443537")  # tench, goldfish


def jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)


def stand_ins(root: Path) -> dict[str, str]:
    meta = []
    for i, wnid in enumerate(WNIDS):
        jpeg(root / "incaps" / wnid / f"{wnid}_0.JPEG", i)
        jpeg(root / "val" / wnid / f"{wnid}_val_0.JPEG", 10 + i)
        meta.append({"filename": f"{wnid}_0.JPEG", "title": "a fish", "tags": ["fish"], "description": ""})
    (root / "incaps" / "metadata.json").write_text(json.dumps(meta))
    pq.write_table(pa.table({"URL": ["http://127.0.0.1:9/a.jpg"], "TEXT": ["a tench"]}), root / "laion.parquet")
    return {"folder": str(root / "incaps"), "urls": str(root / "laion.parquet"), "eval": str(root / "val")}


@pytest.mark.parametrize("name", ["imagenet_captions", "laion_subset"])
def test_gpu_study_specs_parse_and_plan(name, tmp_path):
    spec = load_spec(DATA_DIR / "studies" / f"{name}.yaml")
    train = spec.train
    assert (train.arch, train.epochs, train.batch_size, train.lr, train.weight_decay) == ("RN50", 32, 1024, 1e-3, 0.2)
    assert spec.learners == ["clip", "sl"] and spec.evaluate.prompts == "templates" and spec.evaluate.per_class == 50
    paths = stand_ins(tmp_path)
    data = spec.model_dump(mode="json")
    data["corpus"]["path"] = paths[spec.corpus.source]
    data["evaluate"]["folder"] = paths["eval"]
    graph = plan_study(parse_spec(data))
    assert graph.key("corpus") and graph.key("match") and len(graph.subset_keys) >= 1
    assert {n.config["learner"] for n in graph.of("train")} == {"clip", "sl"}
    assert not any(tmp_path.glob("**/*.tar"))  # planning downloads and writes nothing
