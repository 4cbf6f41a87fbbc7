"""The executor's resource rules, without a GPU: one GPU node per visible device, each pinned to its own."""
from __future__ import annotations

from tailstudy.flows.executor import Executor, Slots
from tailstudy.spec import parse_spec
from tailstudy.stages import plan_study
from tailstudy.store import Workspace


def test_gpu_slots_pin_each_node_to_its_own_device_and_hold_it_until_given_back():
    slots = Slots({"gpu": 2, "cpu": 1}, [0, 1])
    first, second = slots.take({"gpu": 1}), slots.take({"gpu": 1})
    assert (first["devices"], second["devices"]) == ([0], [1])
    assert slots.take({"gpu": 1}) is None  # a third waits: one node per GPU
    assert slots.take({"cpu": 1}) is not None and slots.take({"cpu": 1}) is None  # --jobs 1
    slots.give(second)
    assert slots.take({"gpu": 1})["devices"] == [1]
    assert slots.take({"gpu": 2}) is None


def test_training_nodes_ask_for_a_gpu_on_cuda_and_a_train_slot_on_cpu(tmp_path):
    executor = Executor(Workspace(tmp_path / "ws"), parallel=2, spec_path="x.yaml")  # runs train in child processes
    for device, needs in (("cuda", {"gpu": 1}), ("cpu", {"parallel": 1})):
        graph = plan_study(parse_spec({"name": "x", "train": {"device": device}}))
        assert {str(executor.needs(n)) for n in graph.of("train")} == {str(needs)}
        assert {str(executor.needs(n)) for n in graph.of("curate")} == {str({"cpu": 1})}
    # training in this process holds its torch RNG: no evaluate (which builds a model, drawing from it) overlaps it
    in_process = Executor(Workspace(tmp_path / "ws"))
    assert {str(in_process.needs(n)) for n in graph.of("train")} == {str({"parallel": 1, "torch_rng": 1})}
    assert {str(in_process.needs(n)) for n in graph.of("evaluate")} == {str({"cpu": 1, "torch_rng": 1})}
    assert {str(executor.needs(n)) for n in graph.of("evaluate")} == {str({"cpu": 1})}
    executor.dispatch = "tailstudy-train/train-gpu"
    assert {str(executor.needs(n)) for n in graph.of("train")} == {str({"dispatch": 1})}


def test_the_executor_reads_what_a_stage_declares_and_names_no_stage(tmp_path, monkeypatch):
    """Isolation, dispatch and the torch RNG come from the stage's declared traits, not from its name."""
    import ast
    from pathlib import Path

    import tailstudy.flows.executor as executor_module
    from tailstudy.stages import REGISTRY, Node, Stage

    class Probe(Stage):
        name, VERSION = "probe", 1
        uses_torch_rng, isolated, dispatchable = True, True, True

        def resources(self, node, gpus=0):
            return {"cpu": 2}

    monkeypatch.setitem(REGISTRY, "probe", Probe())
    node = Node("probe")
    in_process, isolating = Executor(Workspace(tmp_path)), Executor(Workspace(tmp_path), parallel=2, spec_path="x")
    assert in_process.needs(node) == {"cpu": 2, "torch_rng": 1} and in_process.where(Probe()) == "here"
    assert isolating.needs(node) == {"cpu": 2} and isolating.where(Probe()) == "process"
    isolating.dispatch = "flow/deployment"
    assert isolating.needs(node) == {"dispatch": 1} and isolating.where(Probe()) == "flow"
    strings = {n.value for n in ast.walk(ast.parse(Path(executor_module.__file__).read_text()))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert strings & set(REGISTRY) == set()


def test_ready_builds_start_longest_first_so_a_study_ends_on_short_ones(tmp_path, monkeypatch):
    """With one slot, the ready builds run in order of the work their stage declares (largest first; equal work keeps
    the graph's order), through the executor's real run (Prefect tasks, the workspace's atomic builds)."""
    from tailstudy.stages import REGISTRY, Node, Stage

    started: list[str] = []

    class Sized(Stage):
        name, VERSION = "sized", 1

        def key_config(self, config):
            return config

        def work(self, node, ws):
            return node.config["work"]

        def build(self, ctx, out):
            started.append(ctx.node.label)
            (out / "done").write_text("")
            return {}

    monkeypatch.setitem(REGISTRY, "sized", Sized())
    works = {"a": 1.0, "b": 30.0, "c": 0.0, "d": 30.0, "e": 7.0}
    nodes = [Node("sized", {"work": w, "name": label}, label=label) for label, w in works.items()]
    records = Executor(Workspace(tmp_path), jobs=1).run(nodes)
    assert started == ["b", "d", "e", "a", "c"]
    assert [r["label"] for r in records] == list(works)  # records keep the graph's order
    started.clear()
    Executor(Workspace(tmp_path), jobs=1).run(nodes)
    assert started == []  # built once: reused by key
    # one executor, two run() calls (a study's data stages, then its runs): what the first built is settled from the
    # executor's own record, and its downstream then starts in the same pass (nothing is running to wake it later)
    executor = Executor(Workspace(tmp_path), jobs=1)
    up = Node("sized", {"work": 5.0, "name": "up"}, label="up")
    down = [Node("sized", {"work": w, "name": f"down{w}"}, {"up": up}, label=f"down{w}") for w in (1.0, 2.0)]
    executor.run([up])
    started.clear()
    executor.run(down)
    assert started == ["down2.0", "down1.0"]
