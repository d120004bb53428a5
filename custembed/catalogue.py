"""The action catalogue: behaviours x items as data, with stable token ids.

An action is a behaviour applied to an item (``buying water purifier``) or the
single ``no action`` token. Ids: 0 padding, 1 mask, 2 unknown, then actions in
the order the catalogue file declares them, so the same file always gives the
same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custembed.config import ConfigError, read_yaml_file, resolve_conf_file

PAD_ID = 0
MASK_ID = 1
UNK_ID = 2
N_SPECIAL = 3
SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[UNK]")
ACTION_SEPARATOR = " -> "


@dataclass(frozen=True)
class Action:
    id: int
    behaviour: str
    item: str | None
    text: str  # what a language model reads: "buying water purifier"


@dataclass(frozen=True)
class ActionCatalogue:
    """Behaviours, items and actions with their ids, plus the raw-code mapping."""

    name: str
    actions: tuple[Action, ...]
    event_types: Mapping[str, str]  # raw event code -> behaviour
    item_aliases: Mapping[str, str] = field(default_factory=dict)  # raw item code -> item name
    behaviours: tuple[str, ...] = ()
    no_action_text: str = "no action"

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + len(self.actions)

    @property
    def no_action_id(self) -> int:
        return self.action_id(self.no_action_text, None)

    def action_id(self, behaviour: str, item: str | None) -> int:
        for action in self.actions:
            if action.behaviour == behaviour and action.item == item:
                return action.id
        raise ValueError(f"no action '{behaviour} {item}' in catalogue {self.name}")

    def buy_action_id(self, product: str) -> int:
        """Id of buying ``product``: what labels count."""
        try:
            return self.action_id("buying", product)
        except ValueError as e:
            raise ConfigError(f"product {product!r} is not a buying action of catalogue {self.name}") from e

    def id_to_text(self) -> list[str]:
        """Text of every token id, index = id (special tokens included)."""
        return list(SPECIAL_TOKENS) + [a.text for a in self.actions]

    def id_to_behaviour(self) -> list[str]:
        return ["[special]"] * N_SPECIAL + [a.behaviour for a in self.actions]

    def code_table(self) -> list[tuple[str, str, int]]:
        """(behaviour, item, id) of every action with an item: the join target of raw events."""
        return [(a.behaviour, a.item, a.id) for a in self.actions if a.item is not None]


def _label(item: str, labels: Mapping[str, str]) -> str:
    return labels.get(item, item.replace("_", " "))


def parse_catalogue(data: Mapping[str, Any], source: str) -> ActionCatalogue:
    """Build a catalogue from its YAML data; errors name ``source`` and the key."""
    known = {"name", "no_action", "groups", "behaviours", "event_types", "items", "labels"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(known))})")
    groups = data.get("groups") or {}
    labels = data.get("labels") or {}
    no_action = str(data.get("no_action", "no action"))
    actions: list[Action] = []
    behaviours: list[str] = []
    for entry in data.get("behaviours") or []:
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"{source}: each behaviour needs a name, got {entry!r}")
        behaviour = str(entry["name"])
        behaviours.append(behaviour)
        items_ref = entry.get("items")
        if items_ref is None:
            actions.append(Action(N_SPECIAL + len(actions), behaviour, None, behaviour))
            continue
        items = groups.get(items_ref) if isinstance(items_ref, str) else items_ref
        if items is None:
            raise ConfigError(f"{source}: behaviour {behaviour!r} names unknown item group {items_ref!r}")
        for item in items:
            text = f"{behaviour} {_label(str(item), labels)}"
            actions.append(Action(N_SPECIAL + len(actions), behaviour, str(item), text))
    if not any(a.behaviour == no_action and a.item is None for a in actions):
        raise ConfigError(f"{source}: behaviours must include {no_action!r} without items")
    event_types = {str(k): str(v) for k, v in (data.get("event_types") or {}).items()}
    for code, behaviour in event_types.items():
        if behaviour not in behaviours:
            raise ConfigError(f"{source}: event type {code!r} maps to unknown behaviour {behaviour!r}")
    seen: set[tuple[str, str | None]] = set()
    for a in actions:
        if (a.behaviour, a.item) in seen:
            raise ConfigError(f"{source}: duplicate action '{a.text}'")
        seen.add((a.behaviour, a.item))
    return ActionCatalogue(
        name=str(data.get("name", Path(source).stem)),
        actions=tuple(actions),
        event_types=event_types,
        item_aliases={str(k): str(v) for k, v in (data.get("items") or {}).items()},
        behaviours=tuple(behaviours),
        no_action_text=no_action,
    )


def load_catalogue(name: str) -> ActionCatalogue:
    """Load a catalogue file by path or by its name in ``conf/``."""
    path = resolve_conf_file(name)
    return parse_catalogue(read_yaml_file(path), str(path))
