"""The halt registry: every subsystem that can be stopped registers a handler here.

The kill switch fans out to all of them; later subsystems plug in from their AppConfig.ready().
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class HaltReport:
    subsystem: str
    stopped: list[str] = field(default_factory=list)  # ids of what was stopped
    elapsed_ms: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "subsystem": self.subsystem,
            "stopped": self.stopped,
            "count": len(self.stopped),
            "elapsed_ms": round(self.elapsed_ms, 2),
            "detail": self.detail,
        }


# handler(reason) -> HaltReport. The reason arrives coded ("kill_switch: ...", "operator_stop: ...");
# a handler must be idempotent and must not raise for "nothing to stop".
HaltHandler = Callable[[str], HaltReport]

_HANDLERS: dict[str, HaltHandler] = {}


def register_halt_handler(subsystem: str, handler: HaltHandler) -> None:
    _HANDLERS[subsystem] = handler


def halt_handlers() -> dict[str, HaltHandler]:
    return dict(_HANDLERS)
