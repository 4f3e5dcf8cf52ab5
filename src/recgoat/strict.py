"""Configuration models that do not read booleans as numbers.

pydantic (lax mode) accepts ``True`` for an ``int`` or ``float`` field as 1, and YAML 1.1 reads ``yes``,
``no``, ``on`` and ``off`` as booleans, so ``epochs: yes`` trained one epoch and ``k_core: no`` switched
filtering off without a word. :class:`StrictNumbers` refuses a boolean (or a list holding one) for any field
that takes numbers but not booleans, in the Python API as in files; :func:`booleans_for_numbers` lists those
errors for a whole (nested) mapping, so a configuration file can name each key before validation.
:func:`is_int` and :func:`is_real` are the same rule for a single value checked by hand (a setting, a K, an
index parameter): an integer or a real number, numpy's included, but never a boolean.
"""
from __future__ import annotations

import numbers
from typing import Any, get_args

import numpy as np
from pydantic import BaseModel, model_validator

BOOL_FOR_NUMBER = "expected a number, not a boolean (YAML reads yes/no/on/off/true/false so)"


def is_int(value: Any) -> bool:
    """An integer (``int``, a numpy integer, any :class:`numbers.Integral`), not a boolean: ``True`` given as
    a count, a seed or a K is a mistake (YAML reads yes/no/on/off so), not 1. Floats (``8.0``), strings of
    digits and 0-d arrays are not integers either."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (``int``, ``float``, numpy's, :class:`fractions.Fraction`, any :class:`numbers.Real`),
    not a boolean and not a string of digits. NaN and inf are real here: callers that need a finite value
    check it themselves. :class:`decimal.Decimal` is no :class:`numbers.Real` and is refused."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _leaf_types(annotation: Any) -> set[Any]:
    """The types an annotation admits (``int | None`` → {int, NoneType}; ``tuple[float, ...]`` → {float, …})."""
    args = [a for a in get_args(annotation) if a is not Ellipsis]
    return set().union(*(_leaf_types(a) for a in args)) if args else {annotation}


def booleans_for_numbers(model: type[BaseModel], data: dict[str, Any], loc: tuple[str, ...] = ()) -> list[dict]:
    """Validation-style errors (``loc``, ``type``, ``input``, ``msg``) for booleans given to number fields of
    ``model`` in ``data``, nested models included."""
    errors = []
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        types = _leaf_types(field.annotation)
        nested = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if nested is not None and isinstance(value, dict):
            errors += booleans_for_numbers(nested, value, (*loc, str(key)))
        elif bool not in types and types & {int, float} and (
                isinstance(value, bool) or isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            errors.append({"loc": (*loc, str(key)), "type": "bool_for_number", "input": value, "msg": BOOL_FOR_NUMBER})
    return errors


class StrictNumbers(BaseModel):
    """A pydantic model whose number fields refuse booleans (see the module docstring)."""

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            bad = booleans_for_numbers(cls, data, ())
            if bad:
                e = bad[0]
                raise ValueError(f"{'.'.join(e['loc'])}: {e['msg']} (got {e['input']!r})")
        return data
