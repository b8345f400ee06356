"""Response models built without validation, for the hot read paths (a page of VMs).

A response model built from the store's rows validates each field of each row, though each
value already has its field's type: 12 µs a VM, two thirds of it in validation. `built`
makes the same instance without it (as pydantic's `model_construct` does, which costs more
than the validation it skips: it looks at every field's default in Python). The caller
gives every field, each of exactly the type validation would give back (for example a
float, never an int, for a `float` field): the answer's bytes are then those of the
validated model. tests/unit/test_vm_out.py compares the two for VMs of every kind.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def built(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of `cls` holding `values` (every field of `cls`, in its order), as they
    are."""
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
