"""Bounded types for what the API takes in paths, queries and bodies.

Every integer fits what the database can hold where it goes or is compared with (int64 for
`BigInteger` columns, int32 for `Integer` ones, as PostgreSQL stores them), and all text is
text the database can store and compare (no NUL character, no lone surrogate): out of range
or malformed input is a 422 naming the field, never an error of the database (a 500).
Names of things (VMs, nodes, users) are `schemas.Name` (NAME_PATTERN); ids are `Id`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, Field, StringConstraints

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]

# The id of a task, command or token (a uuid: the characters of a name).
Id = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NAME_PATTERN)]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


# Free text, stored or compared as given (a description, an address, an actor).
Text = Annotated[str, AfterValidator(_storable)]

# A position in the event log: its ids are an `Integer` column (int32 in PostgreSQL).
EventId = Annotated[
    int | None,
    Query(ge=0, le=INT32_MAX, description="Events after this id; default: the newest `limit`."),
]
