"""The self-optimiser's wire contract, importable without the worker."""

from schemas.codec import decode_action, decode_plan, decode_record, encode
from schemas.messages import (
    MAX_ACTIONS_PER_PLAN,
    MAX_DETAIL_LENGTH,
    ActionKind,
    EnactmentRecord,
    EnactmentStatus,
    ImprovementAction,
    Message,
    ParkReason,
    Plan,
    routing_key,
)

__all__ = [
    "MAX_ACTIONS_PER_PLAN",
    "MAX_DETAIL_LENGTH",
    "ActionKind",
    "EnactmentRecord",
    "EnactmentStatus",
    "ImprovementAction",
    "Message",
    "ParkReason",
    "Plan",
    "decode_action",
    "decode_plan",
    "decode_record",
    "encode",
    "routing_key",
]
