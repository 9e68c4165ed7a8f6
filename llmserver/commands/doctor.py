"""``llmserver doctor``: check a setup and name each problem with how to fix it.

Runs every check of :mod:`llmserver.checks` (configuration, secrets and their file modes, the
database, the runtime and its models, the NPU, free disk), prints one line per finding (``ok``,
``note`` or ``PROBLEM`` with a ``fix:`` line), and exits 0 when nothing is wrong, 1 otherwise.
Run it as the services' user to see what they see: ``sudo -u llmserver llmserver doctor`` reads the
installed unit's settings and credentials (:mod:`llmserver.envfile`).
"""

from __future__ import annotations

import argparse
import os
import sys

from llmserver import checks
from llmserver.checks import PROBLEM, Finding
from llmserver.envfile import add_env_file_option, load_env_file
from llmserver.logging import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the setup; name each problem and how to fix it",
        description="Check configuration, secrets and their file modes, the database, the runtime and its "
        "models, the NPU and free disk. Exit status 1 when something is wrong.",
    )
    add_env_file_option(p)
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    load_env_file(args.env_file)
    configure_logging("ERROR")  # the findings say it all; no retry chatter from the runtime client
    findings = diagnose()
    for finding in findings:
        sys.stdout.write(_line(finding))
    problems = sum(1 for f in findings if f.level == PROBLEM)
    if problems:
        sys.stdout.write(f"\n{problems} problem(s) found.\n")
        return 1
    sys.stdout.write("\nThe setup is healthy: no problems found.\n")
    return 0


def diagnose() -> list[Finding]:
    env = dict(os.environ)
    settings, found = checks.check_configuration(env)
    found += checks.check_secrets(env, settings)
    found += checks.check_database(settings)
    found += checks.check_vault(settings)
    models, runtime_findings = checks.check_runtime(settings)
    found += runtime_findings
    found += checks.check_npu(env, models)
    found += checks.check_disk(settings, env)
    return found


def _line(finding: Finding) -> str:
    text = f"{finding.level:<8} {finding.area:<14} {finding.message}\n"
    if finding.fix:
        text += f"{'':<8} {'':<14} fix: {finding.fix}\n"
    return text
