"""The engine's enums as API fields: a timer's state and an event's kind.

Validated and described as literals of the members' values: the OpenAPI document
(contract 4) lists them inline, as it always has, with no component for clients to
regenerate from, and an unknown value gets a 422 naming the known ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import GetCoreSchemaHandler, GetPydanticSchema
from pydantic_core import core_schema

from timer_core.engine import EventKind, TimerState

__all__ = ["EventKindField", "TimerStateField"]

EnumT = TypeVar("EnumT", bound=StrEnum)


def _as_literal(enum: type[EnumT]) -> GetPydanticSchema:
    def schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            enum,
            core_schema.literal_schema([member.value for member in enum]),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    return GetPydanticSchema(schema)


TimerStateField = Annotated[TimerState, _as_literal(TimerState)]
EventKindField = Annotated[EventKind, _as_literal(EventKind)]
