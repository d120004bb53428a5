"""The journey text: what the language model reads and writes, one line per visit.

Tokens are separated by single spaces, in time order:

* one location code (``custembed.journeys.codes``, six characters) per sampled
  position, at the fixed sampling rate (``journeys.simulate.sample_hz`` for
  simulated data), so the number of codes measures the visit's duration; equal
  consecutive codes are kept (standing still is a run of one code);
* a purchase marker ``$<zone>`` (``$dairy``) right after the last position of a
  pause that ended with a purchase in that zone; several markers may follow one
  position.

``F01233 F01233 F01232 $dairy F01230 ...``: the model side tokenises this text
(byte-level BPE) and generates more of it; :func:`parse_journey` reads it back,
counting tokens it cannot read instead of raising, since generated text may be
malformed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from custembed.journeys.codes import is_code
from custembed.journeys.layout import ZONE_NAME

PURCHASE_PREFIX = "$"
SEPARATOR = " "


@dataclass(frozen=True)
class Journey:
    """A parsed journey text.

    Attributes:
        codes: location codes in time order.
        purchases: ``(position index, zone)``: a purchase marker after the code at that index
            (index into ``codes``; -1 for a marker before the first code).
        bad_tokens: tokens that are neither a location code nor a purchase marker.
    """

    codes: tuple[str, ...]
    purchases: tuple[tuple[int, str], ...]
    bad_tokens: int = 0


def marker(zone: str) -> str:
    """The purchase marker token of a zone (``$dairy``)."""
    return f"{PURCHASE_PREFIX}{zone}"


def format_journey(codes: Sequence[str], purchases: Mapping[int, Sequence[str]]) -> str:
    """The text of a journey: ``codes`` in time order, each followed by the markers of ``purchases[index]``.

    Raises:
        ValueError: a purchase index outside ``codes`` or a zone that is not one token.
    """
    for index, zones in purchases.items():
        if not 0 <= index < len(codes):
            raise ValueError(f"purchase at position {index} outside the journey's {len(codes)} positions")
        for zone in zones:
            if not ZONE_NAME.fullmatch(zone):
                raise ValueError(f"zone {zone!r} cannot be a marker: lower-case letters, digits and _ only")
    tokens: list[str] = []
    for index, code in enumerate(codes):
        tokens.append(code)
        tokens.extend(marker(zone) for zone in purchases.get(index, ()))
    return SEPARATOR.join(tokens)


def parse_journey(text: str) -> Journey:
    """Codes and purchase markers of a journey text; never raises on malformed (generated) text.

    Any run of whitespace separates tokens. A token that is neither a well-formed code nor
    ``$<zone>`` counts in ``bad_tokens`` and is skipped.
    """
    codes: list[str] = []
    purchases: list[tuple[int, str]] = []
    bad = 0
    for token in text.split():
        if token.startswith(PURCHASE_PREFIX) and ZONE_NAME.fullmatch(token[len(PURCHASE_PREFIX) :]):
            purchases.append((len(codes) - 1, token[len(PURCHASE_PREFIX) :]))
        elif is_code(token):
            codes.append(token)
        else:
            bad += 1
    return Journey(codes=tuple(codes), purchases=tuple(purchases), bad_tokens=bad)
