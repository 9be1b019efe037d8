"""Options several command groups share, defined once so their names, variables and help stay the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

Decorator = Callable[[Any], Any]


def stack(decorators: Sequence[Decorator]) -> Decorator:
    """Apply ``decorators`` so that they appear in ``--help`` in the order given."""

    def apply(f: Any) -> Any:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# The routing of both modes: an Ingress file, or one Service and port.
routing = stack([
    click.option("--ingress", type=click.Path(dir_okay=False, path_type=Path), envvar="MCI_INGRESS_FILE",
                 help="Ingress or MultiClusterIngress manifest with the routing [env: MCI_INGRESS_FILE]."),
    click.option("--service", envvar="MCI_SERVICE",
                 help="Instead of --ingress: the one backend Service [env: MCI_SERVICE]."),
    click.option("--port", envvar="MCI_SERVICE_PORT", default="5000", show_default=True,
                 help="With --service: its port, number or name [env: MCI_SERVICE_PORT]."),
])
