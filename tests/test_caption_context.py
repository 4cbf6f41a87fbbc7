"""benchmarks/check_caption_context.py: a caption is cut where the tokenizer's context ends, and loses its class name
only when no form of the name is left in what the cut keeps."""
import importlib.util
from pathlib import Path

from tailstudy.models.towers import clip_tokenizer

REPO = Path(__file__).resolve().parent.parent


def load_check():
    spec = importlib.util.spec_from_file_location("check_caption_context",
                                                  REPO / "benchmarks" / "check_caption_context.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cut_caption_loses_its_name_only_when_every_form_is_cut_off():
    check = load_check()
    tokenizer = clip_tokenizer("tiny")  # 32 tokens: 30 of the caption's, between the start and end tokens
    assert tokenizer.context_length == 32
    filler = " ".join(["red"] * 40)  # one token a word
    names = {7: ["tabby cat", "tabby"], 9: ["goldfish"]}
    captions = ["tabby cat on a mat",            # fits
                f"tabby cat. {filler}",          # cut after its name
                f"{filler}. goldfish",           # cut before its name
                f"{' '.join(['red'] * 29)} tabby cat",  # cut inside the name, but "tabby" (a synonym) is kept
                f"{filler}. tabby",              # label-less: not counted
                ]
    got = check.context_report(captions, [7, 7, 9, 7, -1], names, tokenizer)
    assert got == {"labelled": 4, "cut": 3, "lost": 1}


def test_a_folder_that_is_no_workspace_is_one_line_and_exit_2(tmp_path, capsys):
    assert load_check().main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "Traceback" not in err
