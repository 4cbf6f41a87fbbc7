"""Study specification: YAML -> validated pydantic model, and factor expansion.

Unknown keys are errors reported with their dotted path, so a typo never silently falls back to a default. One module
per part of a spec: ``corpus`` (the `corpus:` section and its sources), ``subset`` (what a curate stage builds:
`base:` and factor levels, expanded into cells), ``study`` (the other sections, the study, reading YAML).
"""
from tailstudy.spec.base import _first_error
from tailstudy.spec.corpus import (CORPUS_SOURCES, URL_PRESETS, AnyCorpusSpec, CorpusSpec, CorpusTargets,
                                   FolderCorpusSpec, UrlsCorpusSpec, WebdatasetCorpusSpec, ZipfProfile)
from tailstudy.spec.study import (RENAMED_KEYS, EvaluateSpec, LearnerRun, LearnerVariant, MatchingSpec, StudySpec,
                                  TrainSpec, default_spec_path, load_spec, parse_spec)
from tailstudy.spec.subset import (CAPTION_FIELDS, IMBALANCE_KINDS, NAMED_CLASS_LISTS, CapProfile, Cell,
                                   DiversityThreshold, ExponentialProfile, ImbalanceLevel, MatchProfile, SubsetSpec,
                                   TrimTail, expand, level_label)

__all__ = ["_first_error", "CORPUS_SOURCES", "URL_PRESETS", "AnyCorpusSpec", "CorpusSpec", "CorpusTargets",
           "FolderCorpusSpec", "UrlsCorpusSpec", "WebdatasetCorpusSpec", "ZipfProfile", "RENAMED_KEYS",
           "EvaluateSpec", "LearnerRun", "LearnerVariant", "MatchingSpec", "StudySpec", "TrainSpec", "default_spec_path", "load_spec", "parse_spec",
           "CAPTION_FIELDS", "IMBALANCE_KINDS", "NAMED_CLASS_LISTS", "CapProfile", "Cell", "DiversityThreshold",
           "ExponentialProfile", "ImbalanceLevel", "MatchProfile", "SubsetSpec", "TrimTail", "expand", "level_label"]
