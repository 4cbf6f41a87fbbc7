"""Caption variants of a curated subset: the rule that writes each variant's caption from a sample's class name and
text fields, and the prompt a level's captions wrap every class name in (what a CLIP trained on them saw; the
evaluate stage scores zero-shot learners with it too)."""
from __future__ import annotations

from typing import Callable

from tailstudy.describe import openai_templates, pick_by_descriptiveness
from tailstudy.text import normalise


def with_name(text: str, name: str, prefix) -> str:
    """The paper's rule that every caption names its class (so caption variants keep the same samples): the class
    name is prefixed -- always (`name_prefix: true`, the paper's code), only where the text does not already name it
    as whole words (`where_missing`, the default), or never (`false`). Why the default: here every labelled caption
    was found by matching names, so most already name their class, and an always-present copy of the name at the
    first position is a shortcut a small text tower learns to read instead of the caption, which puts the paper's own
    evaluation prompts ("a photo of a {name}.") out of its distribution (README, "Captions and prompts")."""
    if prefix is False or (prefix == "where_missing" and f" {normalise(name)} " in f" {normalise(text)} "):
        return text
    return f"{name}. {text}" if text else name


# caption variant -> its rule, from the class name, the corpus caption, the sample's text fields, a drawn template /
# synonym and the name rule; any other variant is a '+' combination of text fields (title+tags ...), named the same way
CAPTION_VARIANTS = {
    "cname": lambda name, full, template, synonym, fields, prefix: name,
    "a_cname": lambda name, full, template, synonym, fields, prefix: f"a {name}",
    # the paper's "Full Text": title, tags and description, naming the class (with_name)
    "full": lambda name, full, template, synonym, fields, prefix: with_name(full, name, prefix),
    # ours: the web caption as drawn, which may name the class only through a synonym
    "full_unprefixed": lambda name, full, template, synonym, fields, prefix: full,
    "templates": lambda name, full, template, synonym, fields, prefix: template(name),
    "synonym_templates": lambda name, full, template, synonym, fields, prefix: template(synonym or name),
    # ours (pipeline/describe.py): same samples, each keeps its most / least descriptive text field
    "most_descriptive": lambda name, full, template, synonym, fields, prefix: pick_by_descriptiveness([full, *fields],
                                                                                                    True),
    "least_descriptive": lambda name, full, template, synonym, fields, prefix: pick_by_descriptiveness([full, *fields],
                                                                                                     False),
}
TEMPLATE_VARIANTS = ("templates", "synonym_templates")
UNPREFIXED_VARIANTS = ("full_unprefixed", "most_descriptive", "least_descriptive")


def caption_prompt(kind: str, prefix=True) -> str:
    """The prompt a level's captions wrap every class name in, as `prompt_templates` reads it: what a CLIP trained on
    that level saw around each name. Template captions are the 80 templates themselves; text
    variants whose captions all begin with the name (`name_prefix: true`) get "{}."; captions that name the class
    anywhere (the default `where_missing`, and the unprefixed variants) get the bare name."""
    if kind in TEMPLATE_VARIANTS:
        return "templates"
    if kind in ("cname", "a_cname"):
        return {"cname": "{}", "a_cname": "a {}"}[kind]
    return "{}." if prefix is True and kind not in UNPREFIXED_VARIANTS else "{}"


def caption_variant(kind: str, name: str, fields: dict[str, str], full: str, prefix,
                    template=None, synonym: str | None = None) -> str:
    if kind in CAPTION_VARIANTS:
        return CAPTION_VARIANTS[kind](name, full, template, synonym, list(fields.values()), prefix)
    return with_name(". ".join(fields[part] for part in kind.split("+") if fields.get(part)), name, prefix)


def prompt_templates(kind: str) -> list[Callable[[str], str]]:
    """'templates': the 80 OpenAI ImageNet prompts (`openai_templates`); 'a_cname': the single prompt "a {name}"; any
    other kind is one pattern with '{}' for the name (a level's caption prompt, e.g. "{}.")."""
    if kind == "templates":
        return [pattern.format for pattern in openai_templates()]
    return [("a {}" if kind == "a_cname" else kind).format]
