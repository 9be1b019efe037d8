"""The acceptance journey against the real Google Cloud project (and GitLab project) the GITLAB_MCI_LIVE_*
variables name — docs/acceptance.md. Selected only when GITLAB_MCI_LIVE_PROJECT is set (see conftest.py); the run
itself refuses without GITLAB_MCI_LIVE_CONFIRM=yes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.live
def test_the_whole_journey_passes_on_the_real_project_and_leaves_nothing() -> None:
    run_id = f"p{os.getpid()}"[:12]
    try:
        run = subprocess.run([sys.executable, "-m", "gitlab_mci", "acceptance", "run", "--run-id", run_id],
                             capture_output=True, text=True, timeout=3600, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        cleanup = subprocess.run([sys.executable, "-m", "gitlab_mci", "acceptance", "cleanup", "--run-id", run_id],
                                 capture_output=True, text=True, timeout=3600, check=False)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
