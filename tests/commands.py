"""Real `manage.py` command lines, many in one process: one Django start-up for a whole table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# Runs each argv through manage.py's own entry point, so CommandError becomes an exit code and a
# stderr message as on a terminal; anything else (a traceback) is recorded as the code "crash".
DRIVER = r"""
import contextlib, io, json, os, sys, traceback
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from django.core.management import execute_from_command_line
results = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            execute_from_command_line(["manage.py", *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code, _ = "crash", traceback.print_exc()
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def manage_py_many(argvs: list[list[str]], *, env: dict, timeout: float = 120) -> list[dict]:
    """[{code, stdout, stderr}] for each argv (`["run", "--paper-sessions-list", ...]`), in order."""
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
