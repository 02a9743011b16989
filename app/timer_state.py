"""A timer's state: the one list of them, for code, the database and the API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["TimerState"]


class TimerState(StrEnum):
    """``killed``: the signal was delivered. ``expired``: the deadline passed without a
    kill (observe only, the worker was gone, the kill was refused or failed)."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    KILLED = "killed"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Validated and described as the Literal it replaced: the OpenAPI document
        # (contract 4) and the 422 messages keep their exact shape, with no new
        # TimerState component for clients to regenerate from.
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.literal_schema([state.value for state in cls]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )
