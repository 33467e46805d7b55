"""Who may change what on the desk: every operator sees every bot and session; each changes,
starts and stops only their own; staff (an active is_staff user) may do everything.

The API, the dashboard and the admin ask these functions; none of them holds the rule itself.
A bot with no owner (made before bots had owners) is changeable by staff only: nobody can
prove it is theirs. A session may be stopped by whoever started it and by its bot's owner
(stopping is the safe direction: a bot's owner can always halt what trades their bot).
The kill switch is not here: any operator fires it, only staff re-arm it (risk/services.py).
"""
from __future__ import annotations

from config.errors import Forbidden

POLICY = "operators see the whole desk but change, start and stop only their own bots and sessions; staff may do everything"


def is_staff(user) -> bool:
    """Staff in the desk's sense: is_staff, as for re-arming the kill switch and revoking others' tokens."""
    return bool(user is not None and getattr(user, "is_active", False) and getattr(user, "is_staff", False))


def _is(user, owner_id) -> bool:
    return (owner_id is not None and user is not None and getattr(user, "is_authenticated", False)
            and getattr(user, "is_active", False) and user.pk == owner_id)


def bot_may_change(user, bot) -> bool:
    """May `user` edit, rename, delete, backtest or start a session of `bot`?"""
    return is_staff(user) or _is(user, bot.owner_id)


def run_may_change(user, run) -> bool:
    """May `user` stop the paper run `run`? Its starter, its bot's owner, or staff."""
    return is_staff(user) or _is(user, run.owner_id) or _is(user, run.bot.owner_id)


def _whose(row) -> str:
    name = row.owner_name
    return f"belongs to {name}" if name else "has no owner (it predates owners)"


def bot_change_assert(*, user, bot, action: str = "change") -> None:
    """Forbidden (403 `forbidden`) unless bot_may_change; the message says whose bot it is."""
    if not bot_may_change(user, bot):
        who = getattr(user, "username", "") or "this user"
        only = "only its owner or staff" if bot.owner_id is not None else "only staff"
        raise Forbidden("forbidden", f"{who} may not {action} bot {bot.pk} ({bot.name}): it {_whose(bot)}, "
                                     f"and {only} may {action} it ({POLICY})",
                        details={"owner": bot.owner_name, "action": action})


def run_change_assert(*, user, run, action: str = "stop") -> None:
    """Forbidden (403 `forbidden`) unless run_may_change; the message says whose session it is."""
    if not run_may_change(user, run):
        who = getattr(user, "username", "") or "this user"
        raise Forbidden("forbidden", f"{who} may not {action} paper session {run.pk}: it {_whose(run)} (bot "
                                     f"{run.bot.name} {_whose(run.bot)}), and only its starter, its bot's owner "
                                     f"or staff may {action} it ({POLICY})",
                        details={"owner": run.owner_name, "bot_owner": run.bot.owner_name, "action": action})
