"""Ray's label selectors: which nodes (and worker groups) a request may use.

A selector is what Ray's ``label_selector`` takes: ``{key: condition}``, every
condition must hold. A condition, in Ray's own syntax:

- ``"v"``: the node has label ``key`` equal to ``v``;
- ``"!v"``: it does not (a node without the label matches);
- ``"in(a,b)"``: its label is one of ``a``, ``b``;
- ``"!in(a,b)"``: it is none of them (or it has no such label).

These are the two operators of Ray's ``LabelSelectorOperator`` (IN, NOT_IN);
:func:`condition_text` writes Ray's reported constraints back in this syntax.
A request may carry alternatives, in order (its ``label_selector`` and then
those of its ``fallback_strategy``): it may use a node that matches any of
them, and prefers the first that some group matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: A label name or value as Ray (and Kubernetes) allow it: at most 63
#: characters, alphanumeric at both ends, ``-_.`` inside.
_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_CONDITION = re.compile(rf"^(!?)(?:in\(({_NAME}(?:, ?{_NAME})*)\)|({_NAME}))$")
_KEY = re.compile(rf"^(?:(?:{_NAME})(?:\.{_NAME})*/)?{_NAME}$")
_PREFIX_MAX = 253


@dataclass(frozen=True)
class Condition:
    """One key's condition: its label is (or, negated, is not) one of ``values``."""

    key: str
    values: frozenset[str]
    negated: bool

    def holds(self, labels: Mapping[str, str]) -> bool:
        present = labels.get(self.key)
        inside = present is not None and present in self.values
        return inside != self.negated


Selector = tuple[Condition, ...]


def key_error(key: str) -> str | None:
    """Why ``key`` is not a label key Ray accepts, or None."""
    prefix, _, name = key.rpartition("/")
    if len(prefix) > _PREFIX_MAX or len(name) > 63 or not _KEY.fullmatch(key):
        return (
            f"invalid label key {key!r}: an optional DNS prefix and '/', then at most 63 "
            "characters, alphanumeric at both ends, '-', '_' and '.' inside"
        )
    return None


def parse_condition(key: str, text: str) -> Condition:
    """One ``key: condition`` of a selector; ValueError says what is wrong."""
    problem = key_error(key)
    if problem:
        raise ValueError(problem)
    if text == "":  # Ray accepts it: the label must be present and empty
        return Condition(key, frozenset({""}), False)
    found = _CONDITION.fullmatch(text)
    if found is None:
        raise ValueError(
            f"invalid label selector condition {text!r} for {key!r}: expected 'value', "
            "'!value', 'in(a,b)' or '!in(a,b)' (values: at most 63 characters, "
            "alphanumeric at both ends, '-', '_' and '.' inside)"
        )
    negated, listed, single = found.groups()
    values = [v.strip() for v in listed.split(",")] if listed is not None else [single]
    return Condition(key, frozenset(values), bool(negated))


def parse_selector(selector: Mapping[str, str]) -> Selector:
    """A selector's conditions, sorted by key (so equal selectors compare equal)."""
    return tuple(parse_condition(k, v) for k, v in sorted(selector.items()))


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` satisfies every condition."""
    return all(c.holds(labels) for c in selector)


def first_match(alternatives: Sequence[Selector], labels: Mapping[str, str]) -> int | None:
    """The index of the first alternative ``labels`` satisfy, or None."""
    return next((i for i, s in enumerate(alternatives) if matches(s, labels)), None)


def condition_text(values: Sequence[str], negated: bool) -> str:
    """A reported IN / NOT_IN constraint in Ray's selector syntax."""
    listed = sorted(set(values))
    body = listed[0] if len(listed) == 1 else f"in({','.join(listed)})"
    return f"!{body}" if negated else body
