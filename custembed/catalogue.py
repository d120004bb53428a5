"""The action catalogue: behaviours x items as data, with stable token ids.

An action is a behaviour applied to an item (``buying water purifier``) or the
single ``no action`` token. Ids: 0 padding, 1 mask, 2 unknown, then actions in
the order the catalogue file declares them, so the same file always gives the
same ids.

Item catalogues of next-item data (tens of thousands of items) are not written
by hand: a behaviour declared with ``items: data`` takes its items from the
events. ``custembed sequences`` counts them with Spark, keeps those seen at least
``vocabulary.min_count`` times (at most ``vocabulary.max_items``, the most
frequent first) and writes their ids to the ``vocabulary`` table of the run; the
declared actions keep the first ids, data actions follow, most frequent first
(ties by behaviour order, then item). Items under the count map to the unknown
id, they are not rejected. Everything downstream reads the run's catalogue
(:meth:`ActionCatalogue.with_data_actions` over that table), and ``train`` stores
the vocabulary beside every encoder, so ids never drift between training and scoring.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping
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
DATA_ITEMS = "data"  # `items: data`: the behaviour's items come from the events
MAX_ACTIONS = (1 << 20) - 1  # ids fit the 20 bits step 1 packs beside each event's time


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
    data_behaviours: tuple[str, ...] = ()  # behaviours declared with `items: data`
    min_count: int = 1  # occurrences an item needs to enter the vocabulary
    max_items: int | None = None  # most data actions kept (the most frequent)
    n_declared: int = -1  # actions written in the file (the rest came from data); -1: all

    def __post_init__(self) -> None:
        if self.n_declared < 0:
            object.__setattr__(self, "n_declared", len(self.actions))

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + len(self.actions)

    @property
    def first_data_id(self) -> int:
        """Id of the first action built from data (the declared actions come before)."""
        return N_SPECIAL + self.n_declared

    @property
    def needs_data(self) -> bool:
        """Whether some behaviour takes its items from the events (``items: data``)."""
        return bool(self.data_behaviours)

    def with_data_actions(self, rows: Iterable[tuple[str, str, int]]) -> ActionCatalogue:
        """This catalogue plus the data actions of a run: (behaviour, item, id) rows of its ``vocabulary``.

        Ids must continue the declared ones without a gap; ``ValueError`` otherwise.
        """
        ordered = sorted(rows, key=lambda row: row[2])
        declared = self.actions[: self.n_declared]
        added = []
        for expected, (behaviour, item, action_id) in enumerate(ordered, start=self.first_data_id):
            if action_id != expected:
                raise ValueError(f"vocabulary of {self.name}: id {action_id} where {expected} was expected")
            if behaviour not in self.data_behaviours:
                raise ValueError(f"vocabulary of {self.name}: behaviour {behaviour!r} does not take items from data")
            added.append(Action(action_id, behaviour, item, f"{behaviour} {item}"))
        return dataclasses.replace(self, actions=(*declared, *added))

    @property
    def no_action_id(self) -> int:
        return self.action_id(self.no_action_text, None)

    def action_id(self, behaviour: str, item: str | None) -> int:
        found = self._ids.get((behaviour, item))
        if found is None:
            raise ValueError(f"no action '{behaviour} {item}' in catalogue {self.name}")
        return found

    @functools.cached_property
    def _ids(self) -> dict[tuple[str, str | None], int]:
        return {(a.behaviour, a.item): a.id for a in self.actions}

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
        """(behaviour, item, id) of every declared action with an item: the join target of raw events
        (data actions join through the run's ``vocabulary`` table)."""
        return [(a.behaviour, a.item, a.id) for a in self.actions[: self.n_declared] if a.item is not None]


VOCABULARY_FILE = "vocabulary.json"  # beside every trained encoder: what each of its ids stands for


def vocabulary_json(catalogue: ActionCatalogue) -> str:
    """The catalogue's ids as JSON for an encoder directory: name, and (behaviour, item, text) per action id."""
    return json.dumps(
        {
            "catalogue": catalogue.name,
            "n_special": N_SPECIAL,
            "actions": [[a.behaviour, a.item, a.text] for a in catalogue.actions],
        }
    )


@dataclass(frozen=True)
class StoredVocabulary:
    """The vocabulary an encoder was trained with (:data:`VOCABULARY_FILE`)."""

    catalogue: str
    actions: tuple[tuple[str, str | None, str], ...]  # (behaviour, item, text) of ids N_SPECIAL, N_SPECIAL + 1, ...

    @classmethod
    def from_json(cls, text: str) -> StoredVocabulary:
        data = json.loads(text)
        if data.get("n_special") != N_SPECIAL:
            raise ValueError(f"vocabulary file with n_special={data.get('n_special')!r}, expected {N_SPECIAL}")
        return cls(str(data["catalogue"]), tuple((str(b), i, str(t)) for b, i, t in data["actions"]))

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + len(self.actions)

    def item_ids(self, behaviour: str) -> dict[str, int]:
        """Item -> id of the actions of ``behaviour``."""
        return {item: N_SPECIAL + k for k, (b, item, _) in enumerate(self.actions) if b == behaviour and item}

    def item_of(self, behaviour: str) -> dict[int, str]:
        """Id -> item of the actions of ``behaviour``."""
        return {action_id: item for item, action_id in self.item_ids(behaviour).items()}


def _label(item: str, labels: Mapping[str, str]) -> str:
    return labels.get(item, item.replace("_", " "))


def _behaviour_items(entry: Any, groups: Mapping[str, Any], source: str) -> tuple[str, Any]:
    """(name, items) of one ``behaviours`` entry: items None (no item), ``DATA_ITEMS`` or a list."""
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"{source}: each behaviour needs a name, got {entry!r}")
    behaviour = str(entry["name"])
    items_ref = entry.get("items")
    if items_ref is None or items_ref == DATA_ITEMS:
        return behaviour, items_ref
    items = groups.get(items_ref) if isinstance(items_ref, str) else items_ref
    if items is None:
        raise ConfigError(f"{source}: behaviour {behaviour!r} names unknown item group {items_ref!r}")
    return behaviour, items


def parse_catalogue(data: Mapping[str, Any], source: str) -> ActionCatalogue:
    """Build a catalogue from its YAML data; errors name ``source`` and the key."""
    known = {"name", "no_action", "groups", "behaviours", "event_types", "items", "labels", "vocabulary"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(known))})")
    groups = data.get("groups") or {}
    labels = data.get("labels") or {}
    no_action = str(data.get("no_action", "no action"))
    actions: list[Action] = []
    behaviours: list[str] = []
    data_behaviours: list[str] = []
    for entry in data.get("behaviours") or []:
        behaviour, items = _behaviour_items(entry, groups, source)
        behaviours.append(behaviour)
        if items is None:
            actions.append(Action(N_SPECIAL + len(actions), behaviour, None, behaviour))
        elif items == DATA_ITEMS:
            data_behaviours.append(behaviour)
        else:
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
    min_count, max_items = _vocabulary_settings(data.get("vocabulary") or {}, source)
    if (min_count, max_items) != (1, None) and not data_behaviours:
        raise ConfigError(f"{source}: vocabulary settings need a behaviour with 'items: {DATA_ITEMS}'")
    return ActionCatalogue(
        data_behaviours=tuple(data_behaviours),
        min_count=min_count,
        max_items=max_items,
        name=str(data.get("name", Path(source).stem)),
        actions=tuple(actions),
        event_types=event_types,
        item_aliases={str(k): str(v) for k, v in (data.get("items") or {}).items()},
        behaviours=tuple(behaviours),
        no_action_text=no_action,
    )


def _vocabulary_settings(data: Any, source: str) -> tuple[int, int | None]:
    """(min_count, max_items) of the ``vocabulary:`` block, checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: vocabulary must be a mapping, got {data!r}")
    unknown = set(data) - {"min_count", "max_items"}
    if unknown:
        raise ConfigError(f"{source}: unknown key 'vocabulary.{sorted(unknown)[0]}' (known: max_items, min_count)")
    min_count = data.get("min_count", 1)
    max_items = data.get("max_items")
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise ConfigError(f"{source}: vocabulary.min_count must be a positive integer, got {min_count!r}")
    if max_items is not None and (
        not isinstance(max_items, int) or isinstance(max_items, bool) or not 1 <= max_items <= MAX_ACTIONS
    ):
        raise ConfigError(f"{source}: vocabulary.max_items must be in [1, {MAX_ACTIONS}] or null, got {max_items!r}")
    return min_count, max_items


def load_catalogue(name: str) -> ActionCatalogue:
    """Load a catalogue file by path or by its name in ``conf/``."""
    path = resolve_conf_file(name)
    return parse_catalogue(read_yaml_file(path), str(path))
