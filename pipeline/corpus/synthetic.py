"""The synthetic world: a controlled, long-tailed image-text corpus that a tiny network learns on a CPU in minutes.

Each concept is named after a real ImageNet class and drawn as a coloured, textured shape (shape x colour x texture).
Concepts come in families of near-twins that share two of the three attributes, so classes are confusable the way
fine-grained web concepts are. From world 3 on a family is a run of concepts adjacent in the WordNet hierarchy
(semantic siblings look alike, as dog breeds do), so a pretrained text encoder's similarities agree with visual ones;
world 2 assigns the looks at random. Concept frequencies follow a profile (a real corpus's counts, or Zipf). Captions are
web-like (`tailstudy.corpus.captions`): a title, tags and a description of what is visible in *this* image; some
captions never name their concept; in world 4 (the default) named titles put the name inside the phrasings web
alt-text uses ("a photo of my {name}"). Worlds 2 and 3 keep their captions (and corpus keys) as they were.
Everything is a pure function of the config and its seed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from tailstudy.corpus.captions import caption_fields, full_caption
from tailstudy.corpus.shards import ShardWriter, encode_png
from tailstudy.errors import SpecError
from tailstudy.frequency import reference_counts
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.spec import CorpusSpec, EvaluateSpec, ZipfProfile
from tailstudy.store import write_parquet
from tailstudy.vocab import VOCAB_DIR, Concept, Vocabulary, imagenet1k

WORLD_VERSION = 2  # 2: concept eligibility honours negative words (crane, bow)
SHARD_SIZE = 5000
FAMILY_SIZE = 5

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "ring", "bar", "star"]
COLOURS = {
    "red": (215, 40, 40), "yellow": (230, 210, 40), "green": (40, 165, 60), "blue": (45, 85, 225),
    "purple": (140, 60, 190), "pink": (245, 130, 190), "white": (235, 235, 235), "cyan": (40, 210, 220),
    "brown": (135, 85, 40), "lime": (160, 235, 60),
}
TEXTURES = ["plain", "horizontally striped", "vertically striped", "diagonally striped", "checkered", "dotted"]
POSITIONS = {(0, 0): "upper left", (0, 1): "top", (0, 2): "upper right", (1, 0): "left", (1, 1): "centre",
             (1, 2): "right", (2, 0): "lower left", (2, 1): "bottom", (2, 2): "lower right"}

@dataclass(frozen=True)
class WorldConcept:
    concept_id: int
    name: str
    synonyms: tuple[str, ...]
    is_target: bool
    family: int
    shape: int
    colour: int
    texture: int


# ---------------------------------------------------------------- concepts and families

def eligible_concepts(vocab: Vocabulary) -> list[Concept]:
    """Classes whose display name matches only itself in the vocabulary, so captions are unambiguous by design."""
    matcher = PhraseMatcher(vocab)
    return [c for c in vocab.concepts if matcher.match_one(c.name) == [c.concept_id] and c.name.lower() != "orange"]


@lru_cache(maxsize=1)
def hypernym_paths() -> dict[str, tuple[str, ...]]:
    """ImageNet-1k wnid -> its WordNet hypernym path, root first (data/vocab/imagenet1k_hypernyms.tsv)."""
    lines = (VOCAB_DIR / "imagenet1k_hypernyms.tsv").read_text().splitlines()
    return {wnid: tuple(path.split()) for wnid, path in (line.split("\t") for line in lines if line)}


def hierarchy_rank(keys: list[str]) -> np.ndarray:
    """Rank of each concept in a depth-first walk of the WordNet hierarchy (siblings end up adjacent)."""
    paths = hypernym_paths()
    missing = [k for k in keys if k not in paths]
    if missing:
        raise SpecError(f"corpus.world 3: concept {missing[0]!r} has no WordNet hypernym path (use world: 2)")
    order = sorted(range(len(keys)), key=lambda i: paths[keys[i]])
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    return rank


def usable_synonyms(concept: Concept, matcher: PhraseMatcher) -> tuple[str, ...]:
    return tuple(s for s in concept.synonyms if matcher.match_one(s) == [concept.concept_id])


def build_families(n_concepts: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """(family, shape, colour, texture) per concept; twins in a family differ in exactly one attribute."""
    sizes = (len(SHAPES), len(COLOURS), len(TEXTURES))
    if n_concepts > int(np.prod(sizes)) // 2:
        raise SpecError(f"corpus: at most {int(np.prod(sizes)) // 2} concepts in all (targets + open) fit the world")
    used: set[tuple[int, int, int]] = set()
    out: list[tuple[int, int, int, int]] = []
    family = 0
    while len(out) < n_concepts:
        varying = int(rng.integers(3))
        fixed = [int(rng.integers(s)) for s in sizes]
        values = rng.permutation(sizes[varying])
        members = []
        for value in values:
            attrs = list(fixed)
            attrs[varying] = int(value)
            if tuple(attrs) not in used:
                members.append(tuple(attrs))
            if len(members) == min(FAMILY_SIZE, n_concepts - len(out)):
                break
        if len(members) < 2 and n_concepts - len(out) >= 2:
            continue  # too few free twins left for this seed; draw another family
        for attrs in members:
            used.add(attrs)
            out.append((family, *attrs))
        family += 1
    return out


def choose_concepts(cfg: CorpusSpec, vocab: Vocabulary, rng: np.random.Generator) -> list[WorldConcept]:
    pool = eligible_concepts(vocab)
    needed = cfg.concepts + cfg.open_concepts
    if needed > len(pool):
        raise SpecError(f"corpus: {needed} concepts asked, the vocabulary has {len(pool)} unambiguous ones")
    chosen = [pool[i] for i in np.sort(rng.choice(len(pool), size=needed, replace=False))]
    is_target = np.zeros(needed, bool)
    is_target[rng.choice(needed, size=cfg.concepts, replace=False)] = True
    matcher = PhraseMatcher(vocab)
    attrs = build_families(needed, rng)
    # families are drawn in order. World 2: shuffle which concept gets which visual, so names carry no visual order;
    # world 3: concepts take them in WordNet order, so a family's near-twins are semantic siblings (e.g. dog breeds)
    order = rng.permutation(needed)
    if cfg.world >= 3:
        order = hierarchy_rank([c.key for c in chosen])  # concept i takes family slot order[i]
    return [
        WorldConcept(c.concept_id, c.name, usable_synonyms(c, matcher), bool(is_target[i]), *attrs[order[i]])
        for i, c in enumerate(chosen)
    ]


# ---------------------------------------------------------------- frequencies

def profile_counts(profile: str | ZipfProfile, concepts: list[WorldConcept], total: int, min_count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Samples per concept: the profile's shape scaled to `total`, every concept at least `min_count`."""
    n = len(concepts)
    if n == 0:
        return np.zeros(0, np.int64)
    if isinstance(profile, ZipfProfile):
        weights = 1.0 / np.arange(1, n + 1) ** profile.zipf
        weights = weights[rng.permutation(n)]
    elif profile == "uniform":
        weights = np.ones(n)
    else:
        table = reference_counts(profile)
        weights = np.array([max(table.get(c.name, 0), 1) for c in concepts], float)
    counts = np.floor(weights / weights.sum() * total).astype(np.int64)
    return np.maximum(counts, min_count)


# ---------------------------------------------------------------- images

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys, xs


def shape_mask(shape: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    d = np.sqrt(dx ** 2 + dy ** 2)
    name = SHAPES[shape]
    if name == "circle":
        return d < r
    if name == "square":
        return np.maximum(abs(dx), abs(dy)) < r * 0.8
    if name == "triangle":
        return (dy < r * 0.75) & (abs(dx) < (dy + r * 0.9) * 0.62)
    if name == "diamond":
        return abs(dx) + abs(dy) < r * 1.1
    if name == "cross":
        return ((abs(dx) < r * 0.33) & (abs(dy) < r)) | ((abs(dy) < r * 0.33) & (abs(dx) < r))
    if name == "ring":
        return (d < r) & (d > r * 0.55)
    if name == "bar":
        return (abs(dy) < r * 0.38) & (abs(dx) < r * 1.05)
    theta = np.arctan2(dy, dx)  # star
    return d < r * (0.62 + 0.38 * np.cos(5 * theta))


def texture_pattern(texture: int, ys: np.ndarray, xs: np.ndarray, angle: float, phase: float, period: float) -> np.ndarray:
    """1.0 where the shape shows its colour, a darker factor elsewhere."""
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    k = 2 * np.pi / period
    name = TEXTURES[texture]
    if name == "plain":
        on = np.ones_like(u, bool)
    elif name == "horizontally striped":
        on = np.sin(k * v + phase) > 0
    elif name == "vertically striped":
        on = np.sin(k * u + phase) > 0
    elif name == "diagonally striped":
        on = np.sin(k * (u + v) / 1.414 + phase) > 0
    elif name == "checkered":
        on = (np.sin(k * u + phase) > 0) ^ (np.sin(k * v + phase) > 0)
    else:  # dotted
        on = (np.cos(k * u + phase) + np.cos(k * v + phase)) > 1.0
    return np.where(on, 1.0, 0.35).astype(np.float32)


def render(concept: WorldConcept, size: int, variation: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One image of a concept; intra-class variation (pose, size, colour, clutter, noise) scales with `variation`."""
    ys, xs = _grid(size)
    v = variation
    bg_level = rng.uniform(0.08, 0.3)
    bg_tint = rng.normal(0, 0.04 * v, 3)
    img = np.clip(np.full((size, size, 3), bg_level, np.float32) + bg_tint, 0, 1).astype(np.float32)
    cy = size / 2 + rng.normal(0, 0.09 * size * v)
    cx = size / 2 + rng.normal(0, 0.09 * size * v)
    cy, cx = float(np.clip(cy, size * 0.3, size * 0.7)), float(np.clip(cx, size * 0.3, size * 0.7))
    r = size * 0.3 * (1 + rng.uniform(-0.2, 0.2) * min(v, 1.5))
    angle = rng.normal(0, 0.15 * v)
    mask = shape_mask(concept.shape, ys - cy, xs - cx, r)
    colour = np.array(list(COLOURS.values())[concept.colour], np.float32) / 255
    colour = np.clip(colour + rng.normal(0, 0.05 * v, 3), 0, 1)
    pattern = texture_pattern(concept.texture, ys - cy, xs - cx, angle, rng.uniform(0, 2 * np.pi),
                              size / 6 * (1 + rng.uniform(-0.1, 0.1) * v))
    img[mask] = colour * pattern[mask][:, None]
    clutter = rng.random() < 0.3 * min(v, 1.0)
    if clutter:  # a small distractor blob of a random colour
        by, bx = rng.uniform(0, size, 2)
        blob = (ys - by) ** 2 + (xs - bx) ** 2 < (size * 0.08) ** 2
        img[blob & ~mask] = rng.uniform(0.2, 0.9, 3)
    img = img + rng.normal(0, 0.035 * v, img.shape).astype(np.float32)
    pixels = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    position = POSITIONS[(min(int(cy / size * 3), 2), min(int(cx / size * 3), 2))]
    background = "dark" if bg_level < 0.19 else "grey"
    return pixels, {"position": position, "background": background, "clutter": clutter}


# ---------------------------------------------------------------- the corpus artifact

@dataclass(frozen=True)
class Draw:
    """Who is in the corpus: the concepts (targets first), their counts, each sample's concept and whether its
    caption names it."""
    targets: list[WorldConcept]
    opens: list[WorldConcept]
    counts: np.ndarray
    owner: np.ndarray
    named: np.ndarray

    @property
    def ordered(self) -> list[WorldConcept]:
        return self.targets + self.opens


def draw_samples(cfg: CorpusSpec) -> Draw:
    """Concepts, their counts under the profile, and a shuffled sample order (the rng is consumed in this order)."""
    rng = np.random.default_rng([cfg.seed, 0])
    concepts = choose_concepts(cfg, imagenet1k(), rng)
    targets = [c for c in concepts if c.is_target]
    opens = [c for c in concepts if not c.is_target]
    counts = np.concatenate([
        profile_counts(cfg.profile, targets, cfg.samples, cfg.min_count, rng),
        profile_counts(cfg.profile, opens, cfg.open_samples, 1, rng) if opens and cfg.open_samples else
        np.zeros(len(opens), np.int64),
    ])
    owner = np.repeat(np.arange(len(targets) + len(opens)), counts)
    owner = owner[rng.permutation(len(owner))]  # shards mix concepts, as web shards do
    named = rng.random(len(owner)) >= cfg.unnamed_frac
    return Draw(targets, opens, counts, owner, named)


def write_train_shards(cfg: CorpusSpec, draw: Draw, shard_dir: Path, tick) -> tuple[dict, dict]:
    """Render and caption every training sample (each from its own seeded rng) into shards of SHARD_SIZE; returns
    the caption rows and the ground truth rows."""
    rows: dict[str, list] = {k: [] for k in ("sample_id", "caption", "title", "tags", "description", "shard", "key")}
    truth: dict[str, list] = {"sample_id": [], "concept_id": [], "is_target": [], "named": []}
    ordered = draw.ordered
    for start in range(0, len(draw.owner), SHARD_SIZE):
        shard = f"train-{start // SHARD_SIZE:05d}.tar"
        with ShardWriter(shard_dir / shard) as writer:
            for i in range(start, min(start + SHARD_SIZE, len(draw.owner))):
                concept, named = ordered[draw.owner[i]], bool(draw.named[i])
                sample_rng = np.random.default_rng([cfg.seed, 1, i])
                pixels, look = render(concept, cfg.image_size, cfg.variation, sample_rng)
                visual = {"colour": list(COLOURS)[concept.colour], "shape": SHAPES[concept.shape],
                          "texture": TEXTURES[concept.texture], **look}
                fields = caption_fields(concept.name, concept.synonyms, visual, named, sample_rng, cfg.world)
                caption = full_caption(fields)
                key = f"s{i:08d}"
                writer.add(key, {"png": encode_png(pixels), "txt": caption.encode(), "json": json.dumps(fields).encode()})
                for col, val in (("sample_id", key), ("caption", caption), ("shard", shard), ("key", key),
                                 *((col, fields[col]) for col in ("title", "tags", "description"))):
                    rows[col].append(val)
                for col, val in (("sample_id", key), ("concept_id", concept.concept_id),
                                 ("is_target", concept.is_target), ("named", named)):
                    truth[col].append(val)
                tick()
    return rows, truth


def write_eval_shard(cfg: CorpusSpec, targets: list[WorldConcept], per_class: int, shard_dir: Path, tick) -> dict:
    """`per_class` fresh images of every target concept (no captions) in one shard; returns its rows."""
    eval_rows: dict[str, list] = {"sample_id": [], "concept_id": [], "shard": [], "key": []}
    with ShardWriter(shard_dir / "eval-00000.tar") as writer:
        for concept in targets:
            for j in range(per_class):
                sample_rng = np.random.default_rng([cfg.seed, 2, concept.concept_id, j])
                pixels, _ = render(concept, cfg.image_size, cfg.variation, sample_rng)
                key = f"e{concept.concept_id:04d}{j:05d}"
                writer.add(key, {"png": encode_png(pixels)})
                for col, val in (("sample_id", key), ("concept_id", concept.concept_id), ("shard", "eval-00000.tar"),
                                 ("key", key)):
                    eval_rows[col].append(val)
                tick()
    return eval_rows


def write_tables(rows: dict, truth: dict, eval_rows: dict, out: Path) -> None:
    """captions.parquet (what a web corpus would give), truth.parquet (who is really in each image), eval.parquet."""
    captions = pa.table({**{k: pa.array(v, pa.string()) for k, v in rows.items()},
                         "url": pa.nulls(len(rows["sample_id"]), pa.string())})
    write_parquet(captions.select(["sample_id", "caption", "title", "tags", "description", "url", "shard", "key"]),
                  out / "captions.parquet")
    write_parquet(pa.table({"sample_id": pa.array(truth["sample_id"], pa.string()),
                            "concept_id": pa.array(truth["concept_id"], pa.int32()),
                            "is_target": pa.array(truth["is_target"], pa.bool_()),
                            "named": pa.array(truth["named"], pa.bool_())}), out / "truth.parquet")
    write_parquet(pa.table({"sample_id": pa.array(eval_rows["sample_id"], pa.string()),
                            "concept_id": pa.array(eval_rows["concept_id"], pa.int32()),
                            "shard": pa.array(eval_rows["shard"], pa.string()),
                            "key": pa.array(eval_rows["key"], pa.string())}), out / "eval.parquet")


def world_record(cfg: CorpusSpec, draw: Draw) -> dict:
    """world.json: every concept's look and count."""
    return {
        "version": WORLD_VERSION,
        **({"world": cfg.world} if cfg.world >= 3 else {}),  # world 2's file stays as it was
        "image_size": cfg.image_size,
        "targets": [c.concept_id for c in draw.targets],
        "open": [c.concept_id for c in draw.opens],
        "concepts": [{**asdict(c), "count": int(n), "shape": SHAPES[c.shape], "colour": list(COLOURS)[c.colour],
                      "texture": TEXTURES[c.texture]} for c, n in zip(draw.ordered, draw.counts)],
    }


def generate(cfg: CorpusSpec, eval_cfg: EvaluateSpec, out: Path, progress=None) -> dict:
    """Write the world into `out`: shards/, captions.parquet, truth.parquet, eval.parquet, world.json."""
    draw = draw_samples(cfg)
    total = len(draw.owner) + len(draw.targets) * eval_cfg.per_class

    def tick() -> None:
        if progress:
            progress(1, total)

    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True)
    rows, truth = write_train_shards(cfg, draw, shard_dir, tick)
    eval_rows = write_eval_shard(cfg, draw.targets, eval_cfg.per_class, shard_dir, tick)
    write_tables(rows, truth, eval_rows, out)
    (out / "world.json").write_text(json.dumps(world_record(cfg, draw), indent=1))
    return {"samples": len(draw.owner), "eval_samples": len(eval_rows["sample_id"]), "targets": len(draw.targets),
            "open_concepts": len(draw.opens), "shards": len(list(shard_dir.glob("*.tar")))}
