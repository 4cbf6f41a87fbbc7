"""The synthetic world's captions: web-like title, tags and description fields for one image.

A caption names its concept (or one of the concept's synonyms) in at least one field, unless the sample is one of the
unnamed ones (as on the web, where matching misses them). The description says what is visible in *this* image. From
world 4 on, a title that names the concept puts the name inside the phrasings web alt-text uses ("a blurry photo of my
{name}", "plush {name} for sale", "itap of the {name}") at the stated rates, so a text tower trained on these captions
has seen the name inside such phrases; worlds 2 and 3 draw their titles as before (same random draws, same bytes).
"""
from __future__ import annotations

import numpy as np

NAMED_TITLES = ["{name}", "my {name}", "photo of a {name}", "{name} close up", "a {name} I saw today",
                "beautiful {name} - free stock photo", "{name} for sale", "best {name} pictures", "new {name}"]

# World 4: how a named title frames its name. The rates are stated assumptions, not measurements (the project ships no
# caption statistics), and are never tuned toward a claim's verdict: web alt-text names a depicted thing inside a
# depiction phrase about as often as it names it bare, mostly as a photo, less often as artwork or as an object made
# after it (toy, plush, sculpture), with an adjective about a third of the time.
DEPICTION_RATE = 0.5  # share of named titles in a depiction frame; the rest use NAMED_TITLES
PHOTO_MEDIA = ["photo", "picture", "image", "photograph", "close-up photo", "snapshot", "shot", "pic"]
ART_MEDIA = ["drawing", "painting", "sketch", "illustration", "cartoon", "rendering", "doodle", "artwork",
             "graffiti", "tattoo", "sculpture", "3d render"]
OBJECT_FORMS = ["toy", "plush", "plastic", "origami", "embroidered", "wooden", "paper", "lego", "clay", "cartoon"]
MEDIUM_KINDS = {"photo": 0.7, "art": 0.2, "object": 0.1}
ADJECTIVE_RATE = 0.35
ADJECTIVES = ["small", "large", "big", "little", "cute", "beautiful", "old", "nice", "cool", "clean", "dirty",
              "weird", "dark", "bright", "blurry", "black and white", "low resolution", "close-up", "good", "bad",
              "funny", "lovely", "tiny", "hd"]
DETERMINERS = ["a", "the", "my", "this", "our", "one"]
DEPICTION_FRAMES = ["{det0}{medium} of {det} {adj}{name}", "{adj}{name} {medium}", "{det0}{adj}{medium} of {det} {name}",
                    "{name} - {medium}", "itap of {det} {adj}{name}", "{det} {adj}{name} in {det0}{medium}"]
OBJECT_FRAMES = ["{det} {form} {name}", "{form} {name} for sale", "{name} {form}", "{det} {adj}{form} {name}"]
UNNAMED_TITLES = ["IMG_{n}", "DSC{n}", "untitled {n}", "weekend pictures", "new arrival", "look at this",
                  "from my gallery", "found it", "home"]
GENERIC_TAGS = ["photo", "hd", "art", "design", "pattern", "wallpaper", "2019", "2020", "2021", "free", "image"]


def describe(visual: dict) -> str:
    """What is visible in this image, in words: its concept's texture, colour and shape, background and position."""
    return (f"a {visual['texture']} {visual['colour']} {visual['shape']} on a {visual['background']} background, "
            f"{visual['position']}")


def _pick(options: list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def depiction_title(name: str, rng: np.random.Generator) -> str:
    """World 4: the name inside a depiction phrase ("a blurry photo of my {name}", "plush {name} for sale")."""
    kind = rng.choice(list(MEDIUM_KINDS), p=list(MEDIUM_KINDS.values()))
    adj = _pick(ADJECTIVES, rng) + " " if rng.random() < ADJECTIVE_RATE else ""
    det, det0 = _pick(DETERMINERS, rng), _pick(["a ", "the ", ""], rng)
    if kind == "object":
        return _pick(OBJECT_FRAMES, rng).format(det=det, form=_pick(OBJECT_FORMS, rng), adj=adj, name=name)
    medium = _pick(PHOTO_MEDIA if kind == "photo" else ART_MEDIA, rng)
    return _pick(DEPICTION_FRAMES, rng).format(det0=det0, medium=medium, det=det, adj=adj, name=name)


def named_title(name: str, world: int, rng: np.random.Generator) -> str:
    if world >= 4 and rng.random() < DEPICTION_RATE:
        return depiction_title(name, rng)
    return _pick(NAMED_TITLES, rng).format(name=name)


def caption_fields(name: str, synonyms: tuple[str, ...], visual: dict, named: bool, rng: np.random.Generator,
                   world: int = 3) -> dict[str, str]:
    """Title, tags and description of one sample of concept `name` whose image shows `visual` (colour, shape, texture,
    background, position); the concept's name (or one of its synonyms) appears in at least one field iff `named`."""
    if named and len(synonyms) > 1 and rng.random() < 0.25:
        name = synonyms[int(rng.integers(len(synonyms)))]
    where = rng.choice(["title", "tags", "description"], p=[0.6, 0.25, 0.15]) if named else None
    n = int(rng.integers(100, 9999))
    if where == "title":
        title = named_title(name, world, rng)
    else:
        title = UNNAMED_TITLES[int(rng.integers(len(UNNAMED_TITLES)))].format(n=n)
    visual_tags = [visual["colour"], visual["shape"]]
    tags = [t for t in visual_tags if rng.random() < 0.5]
    tags += list(rng.choice(GENERIC_TAGS, size=int(rng.integers(1, 4)), replace=False))
    if where == "tags":
        tags.insert(int(rng.integers(len(tags) + 1)), name)
    description = describe(visual) if (where == "description" or rng.random() < 0.5) else ""
    if where == "description":
        description = f"{name}: {description}"
    return {"title": title, "tags": ", ".join(tags), "description": description}


def full_caption(fields: dict[str, str]) -> str:
    return ". ".join(part for part in (fields["title"], fields["tags"], fields["description"]) if part)
