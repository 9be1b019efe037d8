"""Helm values and ``HELM_UPGRADE_EXTRA_ARGS`` for GitLab's ``auto-deploy-app`` chart.

The deploy script of ``auto-deploy-image`` runs ``helm upgrade … $HELM_UPGRADE_EXTRA_ARGS`` with the variable
unquoted, so the shell splits it on whitespace and does **no** quote processing: ``--set a="b c"`` becomes the
two words ``--set`` ``a="b`` and ``c"``. We parse it the same way and write it back as words joined by one space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from gitlab_mci.errors import UserError

NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
DEFAULT_NODE_PORT = 30999
CHART_PORT = 5000  # the chart's default service.externalPort and service.internalPort

# Options of `helm upgrade` whose values are `key=value[,key=value…]` lists.
_SET_FLAGS = ("--set", "--set-string", "--set-json", "--set-literal", "--set-file")
_VALUES_FLAGS = ("--values", "-f")


@dataclass(frozen=True)
class HelmSettings:
    """What gitlab-mci needs the chart to render."""

    node_port: int = DEFAULT_NODE_PORT
    external_port: int = CHART_PORT
    internal_port: int = CHART_PORT
    disable_ingress: bool = False
    values_file: str | None = None

    def __post_init__(self) -> None:
        check_node_port(self.node_port, "node port")
        for name, port in (("service port", self.external_port), ("internal port", self.internal_port)):
            if not 1 <= port <= 65535:
                raise UserError(f"{name} {port} is not a TCP port (1-65535)")

    def required_sets(self) -> dict[str, str]:
        """The chart values gitlab-mci sets, as ``--set`` keys and values."""
        sets = {"service.type": "NodePort", "service.nodePort": str(self.node_port)}
        # Ports are only set when they differ from the chart's defaults, to keep the arguments short.
        if self.external_port != CHART_PORT:
            sets["service.externalPort"] = str(self.external_port)
        if self.internal_port != CHART_PORT:
            sets["service.internalPort"] = str(self.internal_port)
        if self.disable_ingress:
            sets["ingress.enabled"] = "false"
        return sets


def parse_port(text: str | int, what: str, low: int = 1, high: int = 65535) -> int:
    """Parse a port given as text (flag or variable), naming ``what`` in the error."""
    try:
        port = int(str(text).strip())
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None
    if not low <= port <= high:
        raise UserError(f"{what}: {port} is out of range ({low}-{high})")
    return port


def check_node_port(port: int, what: str = "node port") -> int:
    return parse_port(port, what, NODE_PORT_MIN, NODE_PORT_MAX)


def render_values(settings: HelmSettings) -> str:
    """Render the canonical values file from the packaged jinja2 template."""
    import jinja2  # only `helm values` needs it

    text = resources.files("gitlab_mci.helm").joinpath("auto-deploy-values.yaml.j2").read_text()
    template = jinja2.Template(text, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    rendered: str = template.render(
        node_port=settings.node_port,
        external_port=settings.external_port,
        internal_port=settings.internal_port,
        disable_ingress=settings.disable_ingress,
    )
    return rendered


def split_words(args: str) -> list[str]:
    """Split like the shell splits an unquoted variable with the default IFS (space, tab, newline)."""
    return [w for w in re.split(r"[ \t\n]+", args) if w]


@dataclass(frozen=True)
class _Arg:
    words: tuple[str, ...]  # the word(s) as given: ("--set", "a=b") or ("--set=a=b",) or ("--atomic",)
    flag: str | None = None  # a --set*/--values flag, else None
    value: str | None = None


def _parse(words: list[str]) -> list[_Arg]:
    out: list[_Arg] = []
    i = 0
    while i < len(words):
        w = words[i]
        name, eq, inline = w.partition("=")
        if name in _SET_FLAGS + _VALUES_FLAGS and w.startswith("-"):
            if eq:
                out.append(_Arg((w,), name, inline))
                i += 1
                continue
            if i + 1 >= len(words):
                raise UserError(f"HELM_UPGRADE_EXTRA_ARGS: {w} at the end has no value")
            out.append(_Arg((w, words[i + 1]), name, words[i + 1]))
            i += 2
            continue
        out.append(_Arg((w,)))
        i += 1
    return out


def _assignments(value: str) -> list[tuple[str, str]]:
    # Helm splits --set lists on commas not preceded by a backslash.
    pairs = []
    for item in re.split(r"(?<!\\),", value):
        key, _, val = item.partition("=")
        pairs.append((key.strip(), val))
    return pairs


def upgrade_inputs(args: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The ``--values`` files and ``--set`` assignments in a Helm command line, in order (for the deploy stand-in)."""
    files: list[str] = []
    sets: list[tuple[str, str]] = []
    for arg in _parse(split_words(args)):
        if arg.flag in _VALUES_FLAGS and arg.value is not None:
            files.append(arg.value)
        elif arg.flag in _SET_FLAGS and arg.value is not None:
            sets.extend(_assignments(arg.value))
    return files, sets


def _is_ours(arg: _Arg, settings: HelmSettings) -> bool:
    if arg.flag == "--set" and arg.value is not None and len(arg.words) == 2:
        pairs = _assignments(arg.value)
        return len(pairs) == 1 and settings.required_sets().get(pairs[0][0]) == pairs[0][1]
    return (arg.flag == "--values" and len(arg.words) == 2 and settings.values_file is not None
            and arg.value == settings.values_file)


def extra_args(existing: str, settings: HelmSettings) -> str:
    """The new ``HELM_UPGRADE_EXTRA_ARGS``: the user's words, then what gitlab-mci needs, last so they win.

    Idempotent: ``extra_args(extra_args(x, s), s) == extra_args(x, s)``. A user argument that contradicts the
    settings (another service type or node port) is an error naming it rather than silently overridden.
    """
    required = settings.required_sets()
    kept: list[str] = []
    for arg in _parse(split_words(existing)):
        if _is_ours(arg, settings):
            continue  # re-added below, in a canonical place
        if arg.flag in _SET_FLAGS and arg.value is not None:
            for key, val in _assignments(arg.value):
                want = required.get(key)
                if want is not None and val != want:
                    raise UserError(
                        f"HELM_UPGRADE_EXTRA_ARGS: `{' '.join(arg.words)}` sets {key}={val}, but gitlab-mci needs "
                        f"{key}={want}; remove that argument (it would break the global load balancer)"
                    )
        kept.extend(arg.words)
    ours: list[str] = []
    if settings.values_file:
        ours += ["--values", settings.values_file]
    for key, val in required.items():
        ours += ["--set", f"{key}={val}"]
    return " ".join(kept + ours)
