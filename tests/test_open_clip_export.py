"""A CLIP run's open_clip export loads with open_clip's API alone (no tailstudy registry) and, through open_clip's own
preprocess, gives the zero-shot top-1 that the evaluate stage recorded."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

pytestmark = pytest.mark.slow

SPEC = """\
name: export
corpus: {concepts: 8, open_concepts: 0, samples: 400, open_samples: 0, profile: uniform, min_count: 8, seed: 0}
evaluate: {per_class: 6}
learners: [clip]
train: {arch: tiny, epochs: 2, batch_size: 64, device: cpu}
"""


def run_study(tmp_path: Path):
    """Every node but the report, in this process -> (workspace, graph, train artifact, evaluate artifact)."""
    from tailstudy.spec import parse_spec
    from tailstudy.stages import plan_study, run_node
    from tailstudy.store import Workspace

    ws, graph = Workspace(tmp_path / "ws"), plan_study(parse_spec(yaml.safe_load(SPEC)))
    built = {node.stage: run_node(ws, node) for node in graph.nodes if node.stage != "report"}
    return ws, graph, built["train"], built["evaluate"]


def open_clip_top1(run_dir: Path, corpus_dir: Path, class_ids: list[int], names: dict[int, str]) -> float:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{run_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{run_dir}")
    model.eval()
    evalset = pq.read_table(corpus_dir / "eval.parquet").to_pylist()
    images = {}
    for shard in {row["shard"] for row in evalset}:
        with tarfile.open(corpus_dir / "shards" / shard) as tar:
            for member in tar:
                images[member.name.split(".")[0]] = tar.extractfile(member).read()
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokenizer([f"a {names[c]}" for c in class_ids])), dim=-1)
        x = torch.stack([preprocess(Image.open(io.BytesIO(images[row["key"]]))) for row in evalset])
        pred = (torch.nn.functional.normalize(model.encode_image(x), dim=-1) @ text.T).argmax(1)
    truth = torch.tensor([class_ids.index(row["concept_id"]) for row in evalset])
    return float((pred == truth).float().mean())


def test_clip_export_loads_in_open_clip_and_gives_the_recorded_top1(tmp_path, one_torch_thread):
    ws, graph, trained, evaluated = run_study(tmp_path)
    config = json.loads((trained.path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 32 and config["preprocess_cfg"]["size"] == 32
    state = torch.load(trained.path / "open_clip_pytorch_model.bin", weights_only=True)
    assert "visual.conv1.weight" in state["state_dict"] and "logit_scale" in state["state_dict"]
    names = {c.concept_id: c.name for c in graph.node("vocab").config["vocab"].concepts}
    ours = evaluated.manifest()["metrics"]["top1"]
    theirs = open_clip_top1(trained.path, ws.artifact("corpus", graph.key("corpus")).path,
                            trained.manifest()["class_ids"], names)
    assert abs(theirs - ours) <= 0.005, (theirs, ours)
    log = pq.read_table(trained.path / "train_log.parquet").to_pylist()
    assert [row["epoch"] for row in log] == [0, 1] and all(row["samples_per_s"] > 0 for row in log)
