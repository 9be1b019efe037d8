"""Progress output that reads well where it is shown: collapsible sections in a GitLab job log, plain lines elsewhere.

GitLab folds everything between ``section_start`` and ``section_end`` markers into one line with the header and
its duration (https://docs.gitlab.com/ci/jobs/job_logs/#custom-collapsible-sections).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click


def in_gitlab_job() -> bool:
    return bool(os.environ.get("GITLAB_CI"))


@contextmanager
def section(name: str, header: str, *, collapsed: bool = False, enabled: bool = True) -> Iterator[None]:
    """Group the output written inside the block under ``header`` (nothing when not ``enabled``: JSON output)."""
    if not enabled:
        yield
        return
    if not in_gitlab_job():
        click.echo(header)
        yield
        return
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    option = "[collapsed=true]" if collapsed else ""
    # color=True: the job log is not a terminal, and click would otherwise strip the escape codes GitLab needs.
    click.echo(f"\x1b[0Ksection_start:{int(time.time())}:{slug}{option}\r\x1b[0K{header}", color=True)
    try:
        yield
    finally:
        click.echo(f"\x1b[0Ksection_end:{int(time.time())}:{slug}\r\x1b[0K", color=True)
