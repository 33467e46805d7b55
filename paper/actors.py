"""Dramatiq actors: one long actor per live paper session (see README, Architecture).

An actor takes a run id and calls the session service; all rules live in paper.sessions.
"""
import dramatiq

from paper.sessions import session_artifacts_write, session_execute

# A session runs for its whole duration; the time limit only guards against a runaway.
WEEK_MS = 8 * 24 * 3600 * 1000


@dramatiq.actor(queue_name="paper", max_retries=0, time_limit=WEEK_MS)
def run_paper_session(run_id: str) -> None:
    session_execute(run_id)


@dramatiq.actor(queue_name="paper", max_retries=3, time_limit=10 * 60 * 1000)
def write_session_artifacts(run_id: str) -> None:
    session_artifacts_write(run_id=run_id)
