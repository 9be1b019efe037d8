"""The real clients against a running simulator: gcloud (with its own CLOUDSDK_CONFIG, so the user's is never
touched) and google-cloud-compute."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from tests.conftest import RunningSim


def gcloud(running: RunningSim, *args: str) -> str:
    """``gcloud <args> --quiet`` against ``running``'s simulator; asserts it succeeded, returns its stdout."""
    env = {**os.environ, "CLOUDSDK_CONFIG": str(running.files.gcloud_config)}
    done = subprocess.run(["gcloud", *args, "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def backend_service(running: RunningSim, name: str, project: str = "demo-project") -> Any:
    """The global backend service ``name`` as google-cloud-compute reads it (a ``compute_v1.BackendService``)."""
    from google.cloud import compute_v1

    from gitlab_mci.gcp import Compute

    gc = Compute(project, running.sim.compute_url)
    return gc.client(compute_v1.BackendServicesClient).get(project=project, backend_service=name)
