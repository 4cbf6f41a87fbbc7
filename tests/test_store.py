import json

import pyarrow as pa
import pytest

from tailstudy.store import Workspace, stage_key, write_parquet


def test_stage_key_depends_on_every_input_and_nothing_else():
    base = stage_key("train", 1, {"lr": 0.1, "epochs": 2}, {"subset": "abc"})
    assert base == stage_key("train", 1, {"epochs": 2, "lr": 0.1}, {"subset": "abc"})  # order-free
    assert base != stage_key("train", 2, {"lr": 0.1, "epochs": 2}, {"subset": "abc"})  # code version
    assert base != stage_key("train", 1, {"lr": 0.2, "epochs": 2}, {"subset": "abc"})  # config
    assert base != stage_key("train", 1, {"lr": 0.1, "epochs": 2}, {"subset": "abd"})  # upstream key
    assert base != stage_key("evaluate", 1, {"lr": 0.1, "epochs": 2}, {"subset": "abc"})  # stage name
    assert len(base) == 16 and int(base, 16) >= 0


def test_build_renames_into_place_with_manifest(tmp_path):
    ws = Workspace(tmp_path)
    with ws.build("corpus", "k1", {"inputs": {"a": 1}}) as out:
        (out / "data.txt").write_text("hello")
        assert not ws.exists("corpus", "k1")  # invisible until finished
    assert ws.exists("corpus", "k1")
    manifest = json.loads((tmp_path / "corpus" / "k1" / "manifest.json").read_text())
    assert manifest["key"] == "k1" and manifest["stage"] == "corpus" and manifest["inputs"] == {"a": 1}
    assert [a.key for a in ws.list_artifacts()] == ["k1"]


def test_failure_mid_stage_leaves_no_artifact_and_no_temp(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(RuntimeError):
        with ws.build("match", "k2", {}) as out:
            (out / "part-0.parquet").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not ws.exists("match", "k2")
    assert not (tmp_path / "match" / "k2").exists()
    assert list((tmp_path / "match").iterdir()) == []


def test_replace_swaps_an_existing_artifact(tmp_path):
    ws = Workspace(tmp_path)
    with ws.build("report", "k", {}) as out:
        (out / "v").write_text("1")
    with ws.build("report", "k", {}, replace=True) as out:
        (out / "v").write_text("2")
    assert (tmp_path / "report" / "k" / "v").read_text() == "2"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["k"]


def test_stale_temps_of_killed_runs_are_cleaned(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "train" / ".tmp-abc-1234").mkdir(parents=True)
    (tmp_path / "train" / ".work-abc").mkdir()  # resumable checkpoints are kept
    assert ws.clean_stale_temps() == 1
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [".work-abc"]


def test_parquet_writes_are_byte_identical(tmp_path):
    table = pa.table({"sample_id": ["a", "b"], "label": pa.array([1, None], pa.int32())})
    write_parquet(table, tmp_path / "x.parquet")
    write_parquet(table, tmp_path / "y.parquet")
    assert (tmp_path / "x.parquet").read_bytes() == (tmp_path / "y.parquet").read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
