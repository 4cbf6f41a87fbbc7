"""YAML with repeated keys rejected (study specs, vocabularies)."""
from __future__ import annotations

from typing import Any

import yaml

from tailstudy.errors import InputError, SpecError


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping with a repeated key is an error (PyYAML keeps the last one silently,
    so a repeated `factors:` would drop a factor)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key: the safe loader reports it itself
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str, source: str, error: type[InputError] = SpecError) -> Any:
    """Parse YAML with duplicate keys rejected -> data; any problem is one `error` naming `source` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise error(f"{source}: invalid YAML{where}: {problem}") from None
