"""The halt registry: one handler per subsystem that has something of its own to stop.

The kill switch fans out to every one. They are named in settings.RISK_HALT_HANDLERS
({subsystem: "dotted.path"}), so the list is read in one place and no app registers itself
from `AppConfig.ready()`; `register_halt_handler` adds one at run time (tests, plug-ins).
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
    """Every subsystem's halt handler: the configured ones, then any registered at run time."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    configured = {name: import_string(path) for name, path in getattr(settings, "RISK_HALT_HANDLERS", {}).items()}
    return {**configured, **_HANDLERS}
