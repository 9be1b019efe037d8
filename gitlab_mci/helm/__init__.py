"""Helm values and ``HELM_UPGRADE_EXTRA_ARGS`` for GitLab's ``auto-deploy-app`` chart.

The deploy script of ``auto-deploy-image`` runs ``helm upgrade … $HELM_UPGRADE_EXTRA_ARGS`` with the variable
unquoted, so the shell splits it on whitespace and does **no** quote processing: ``--set a="b c"`` becomes the
two words ``--set`` ``a="b`` and ``c"``. We parse it the same way and write it back as words joined by one space.

The user's own values come first: the values file auto-deploy passes (``HELM_UPGRADE_VALUES_FILE``, else
``.gitlab/auto-deploy-values.yaml`` when it exists), then the ``--values``/``-f`` files and ``--set`` flags of
``HELM_UPGRADE_EXTRA_ARGS``, resolved the way Helm does (files in order, then ``--set`` in order; the last wins).
A key gitlab-mci sets that the user also set is carried over when gitlab-mci was not asked for it (and a line says
so), and refused by name when it contradicts what gitlab-mci was asked for or needs.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gitlab_mci.errors import UserError

NODE_PORT_MIN, NODE_PORT_MAX = 30000, 32767
DEFAULT_NODE_PORT = 30999
CHART_PORT = 5000  # the chart's default service.externalPort and service.internalPort
DEPLOY_VALUES_FILE = ".gitlab/auto-deploy-values.yaml"  # what auto-deploy passes when HELM_UPGRADE_VALUES_FILE is unset

# The chart keys gitlab-mci sets. A key is spelled as Helm's --set spells it: `\.` is a dot inside a key.
TYPE, NODE_PORT, EXTERNAL_PORT, INTERNAL_PORT, INGRESS = (
    "service.type", "service.nodePort", "service.externalPort", "service.internalPort", "ingress.enabled")
# With --backends neg: the Service annotation GKE's NEG controller reads (the chart copies service.annotations).
NEG = "service.annotations.cloud\\.google\\.com/neg"
KEYS = (TYPE, NODE_PORT, EXTERNAL_PORT, INTERNAL_PORT, INGRESS, NEG)
INSTANCE_GROUPS, NEGS = "instance-groups", "neg"

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
    # Keys whose value came from the user's own values: they already reach Helm, so no --set repeats them.
    carried: frozenset[str] = field(default_factory=frozenset)
    # With `neg`: no node port; the Service keeps its type (the chart's ClusterIP) and carries `neg_annotation`.
    backends: str = INSTANCE_GROUPS
    neg_name: str | None = None

    def __post_init__(self) -> None:
        check_node_port(self.node_port, "node port")
        for name, port in (("service port", self.external_port), ("internal port", self.internal_port)):
            if not 1 <= port <= 65535:
                raise UserError(f"{name} {port} is not a TCP port (1-65535)")

    @property
    def neg_annotation(self) -> str | None:
        """The ``cloud.google.com/neg`` annotation for the Service port (compact JSON: no space, no comma with one
        port, so the deploy script's word splitting and Helm's comma splitting leave it whole)."""
        if self.backends != NEGS or self.neg_name is None:
            return None
        return json.dumps({"exposed_ports": {str(self.external_port): {"name": self.neg_name}}},
                          separators=(",", ":"))

    def required_sets(self) -> dict[str, str]:
        """The chart values gitlab-mci sets, as ``--set`` keys and values (:func:`set_flag` says which flag)."""
        sets: dict[str, str] = {}
        if self.backends == NEGS:
            if self.neg_annotation is not None and NEG not in self.carried:
                sets[NEG] = json.dumps(self.neg_annotation)
        else:
            sets = {"service.type": "NodePort", "service.nodePort": str(self.node_port)}
        # Ports are only set when they differ from the chart's defaults, to keep the arguments short, and when the
        # user's values do not already give them.
        if self.external_port != CHART_PORT and EXTERNAL_PORT not in self.carried:
            sets[EXTERNAL_PORT] = str(self.external_port)
        if self.internal_port != CHART_PORT and INTERNAL_PORT not in self.carried:
            sets[INTERNAL_PORT] = str(self.internal_port)
        if self.disable_ingress:
            sets["ingress.enabled"] = "false"
        return sets


def set_flag(key: str) -> str:
    """The flag that sets ``key``: the NEG annotation is a JSON string (--set-json), so that Helm neither reads its
    braces as a list nor types it; everything else is --set."""
    return "--set-json" if key == NEG else "--set"


def split_key(key: str) -> list[str]:
    """A --set key's parts, as Helm splits it: on dots, but for a dot escaped as `\\.`."""
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", key)]


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
        neg=settings.backends == NEGS,
        set_type=TYPE not in settings.carried,
        neg_annotation=settings.neg_annotation if NEG not in settings.carried else None,
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


def upgrade_inputs(args: str) -> tuple[list[str], list[tuple[str, Any]]]:
    """The ``--values`` files and ``--set*`` assignments (typed as Helm types them) of a Helm command line, in order."""
    files: list[str] = []
    sets: list[tuple[str, Any]] = []
    for arg in _parse(split_words(args)):
        if arg.flag in _VALUES_FLAGS and arg.value is not None:
            files.append(arg.value)
        elif arg.flag in _SET_FLAGS and arg.value is not None:
            sets.extend((key, _set_value(arg.flag, val)) for key, val in _assignments(arg.value))
    return files, sets


# ---------------------------------------------------------------------------------------------------------------------
# Helm's value resolution: defaults, then values files in order, then --set flags in order; the last wins.


def merge_values(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, maps merged key by key like Helm merges values files."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def helm_scalar(text: Any) -> Any:
    """Helm's --set typing: integers and booleans are typed, the rest are strings (--set-string keeps strings)."""
    if not isinstance(text, str):
        return text
    if text.lstrip("-").isdigit():
        return int(text)
    return {"true": True, "false": False, "null": None}.get(text, text)


def _set_value(flag: str | None, raw: str) -> Any:
    if flag == "--set-string" or flag == "--set-literal":
        return raw
    if flag == "--set-json":
        try:
            return json.loads(raw)
        except ValueError:
            raise UserError(f"{flag} {raw!r}: not JSON") from None
    if flag == "--set-file":
        return _read(raw, f"the file of {flag}").rstrip("\n")
    return helm_scalar(raw)


def set_path(values: dict[str, Any], key: str, value: Any) -> None:
    """Apply one ``--set key=value`` (dotted key) to ``values``."""
    node = values
    parts = split_key(key)
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a mapping")
    node[parts[-1]] = value


def resolve_values(defaults: dict[str, Any], files: list[str], sets: list[tuple[str, Any]]) -> dict[str, Any]:
    """The values Helm renders with: ``defaults``, then each values file in order, then each ``--set`` in order."""
    values = copy.deepcopy(defaults)
    for path in files:
        values = merge_values(values, load_values_file(path))
    for key, value in sets:
        set_path(values, key, value)
    return values


def load_values_file(path: str | Path) -> dict[str, Any]:
    """A Helm values file as a mapping; an empty file is an empty mapping."""
    from gitlab_mci.files import load_yaml

    loaded = load_yaml(_read(path, "the Helm values file"), str(path)) or {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: Helm values must be a mapping")
    return loaded


def _read(path: str | Path, what: str) -> str:
    from gitlab_mci.files import read_text

    return read_text(path, what)


def _lookup(values: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = values
    for part in split_key(key):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ---------------------------------------------------------------------------------------------------------------------
# The user's own values for the keys gitlab-mci sets


@dataclass(frozen=True)
class Found:
    """A value the user's inputs give one of our keys, and where it comes from."""

    key: str
    value: Any
    source: str  # e.g. "values.yaml (`--values values.yaml` in HELM_UPGRADE_EXTRA_ARGS)"
    words: tuple[str, ...] | None = None  # the HELM_UPGRADE_EXTRA_ARGS word(s) of a --set, else None
    shared: bool = False  # from auto-deploy's values file, passed to every environment's deploy


def user_values(existing: str, deploy_values_file: str | Path | None, ours: str | None) -> list[Found]:
    """Every value the user's inputs give a key gitlab-mci sets, in Helm's order of precedence (the last wins).

    Inputs: ``deploy_values_file`` when it exists (auto-deploy passes it before the extra arguments), then the
    ``--values``/``-f`` files and ``--set*`` flags of ``existing``. Our own values file (``ours``) is not the user's
    and is skipped; any other file counts, even one an earlier `helm values` wrote, since the deploy will use it.
    A ``--values`` file that does not exist is an error, as it is for Helm.
    """
    found: list[Found] = []

    def from_file(path: str, source: str, shared: bool) -> None:
        doc = load_values_file(path)
        for key in KEYS:
            present, value = _lookup(doc, key)
            if present:
                found.append(Found(key, value, source, shared=shared))

    if deploy_values_file and Path(deploy_values_file).is_file() and not _same_file(deploy_values_file, ours):
        from_file(str(deploy_values_file), f"{deploy_values_file} (the values file auto-deploy passes)", True)
    sets: list[Found] = []
    for arg in _parse(split_words(existing)):
        if arg.value is None:
            continue
        if arg.flag in _VALUES_FLAGS:
            if _same_file(arg.value, ours):
                continue
            if not Path(arg.value).is_file():
                raise UserError(f"HELM_UPGRADE_EXTRA_ARGS: `{' '.join(arg.words)}`: no file {arg.value} here "
                                f"(Helm would fail too); run gitlab-mci from the repository's root")
            from_file(arg.value, f"{arg.value} (`{' '.join(arg.words)}` in HELM_UPGRADE_EXTRA_ARGS)", False)
        elif arg.flag in _SET_FLAGS:
            for key, raw in _assignments(arg.value):
                if key in KEYS:
                    sets.append(Found(key, _set_value(arg.flag, raw),
                                      f"`{' '.join(arg.words)}` in HELM_UPGRADE_EXTRA_ARGS", arg.words))
    return found + sets  # Helm: --set beats every values file, whatever the order on the command line


def _same_file(a: str | Path | None, b: str | Path | None) -> bool:
    if a is None or b is None:
        return False
    return Path(a).resolve() == Path(b).resolve()


@dataclass(frozen=True)
class Request:
    """What gitlab-mci was asked for (flags and variables); ``None``: not asked, the user's values or a default."""

    node_port: int | None = None
    external_port: int | None = None
    internal_port: int | None = None
    disable_ingress: bool = False
    values_file: str | None = None
    backends: str = INSTANCE_GROUPS
    lb_name: str | None = None  # with `neg`: the NEG is named after the load balancer


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _same(a: Any, b: Any) -> bool:
    return _norm(a) == _norm(b)


_FLAGS = {NODE_PORT: "--node-port / MCI_NODE_PORT", EXTERNAL_PORT: "--service-port / MCI_SERVICE_PORT",
          INTERNAL_PORT: "--internal-port / MCI_INTERNAL_PORT", INGRESS: "--disable-ingress / MCI_DISABLE_INGRESS"}


def resolve(request: Request, found: list[Found]) -> tuple[HelmSettings, list[str]]:
    """The settings to render and append, consistent with the user's values, and a line per user value kept or
    overridden. A user value that contradicts what was asked for (or what a NodePort load balancer needs) is
    refused, naming where it comes from. A ``--set`` is checked even when a later one overrides it, a values file
    only where it is the value Helm would use."""
    last = {f.key: f for f in found}  # Helm's effective value per key
    notes: list[str] = []

    def check(key: str, want: Any, why: str, *, shared_ok: bool = False) -> None:
        for f in found:
            if f.key != key or _same(f.value, want) or (shared_ok and f.shared):
                continue
            if f.words is not None or f is last[key]:
                raise UserError(f"{f.source} sets {key}={_norm(f.value)}, but {why}")
        if shared_ok and key in last and not _same(last[key].value, want):
            notes.append(f"overriding {key}={_norm(last[key].value)} from {last[key].source} with {_norm(want)} "
                         "for this deploy")

    carried: set[str] = set()
    neg = request.backends == NEGS
    node_port = DEFAULT_NODE_PORT
    if neg:
        # NEGs reach the pods whatever the Service's type: the user's type is kept, else the chart's ClusterIP;
        # no node port is needed, so none is checked.
        if TYPE in last:
            carried.add(TYPE)
            notes.append(f"keeping {TYPE}={_norm(last[TYPE].value)} from {last[TYPE].source} (NEG backends work "
                         "with any type; ClusterIP needs no node port)")
    else:
        # A shared deploy values file may hold the chart's ClusterIP (or an enabled Ingress) for the other
        # environments' deploys: overridden for this one, said out loud. Anywhere else it is a contradiction.
        check(TYPE, "NodePort", f"the global load balancer needs {TYPE}=NodePort; remove it", shared_ok=True)
        if request.node_port is not None:
            node_port = request.node_port
            check(NODE_PORT, node_port, f"gitlab-mci was asked for {NODE_PORT}={node_port} "
                                        f"({_FLAGS[NODE_PORT]}); make them agree")
        else:
            theirs = _norm(last[NODE_PORT].value) if NODE_PORT in last else ""
            check(NODE_PORT, node_port, f"gitlab-mci pins node port {node_port} unless told otherwise; pass "
                                        f"--node-port {theirs} (MCI_NODE_PORT={theirs}) to pin that one, or remove "
                                        "it")

    def port(key: str, asked: int | None, how: str = "", fix: str = "make them agree") -> int:
        if asked is not None:
            check(key, asked, f"gitlab-mci was asked for {key}={asked} ({how or _FLAGS[key]}); {fix}")
            return asked
        if key not in last:
            return CHART_PORT
        f = last[key]
        value = parse_port(f.value, f"{key} in {f.source}")
        carried.add(key)
        notes.append(f"keeping {key}={value} from {f.source} ({_FLAGS[key]} not given)")
        return value

    external = port(EXTERNAL_PORT, request.external_port)
    # Without an internal port of its own, a --service-port also asks for the container port (the chart's default
    # is the same 5000 for both). It is a request like --internal-port, checked against the user's values: the CI
    # template's deploy hook cannot read those, so it sets both ports from the service_port input, and keeping the
    # user's container port here would let the hook override it unseen. The user's external port alone leaves the
    # chart's internal port as it is.
    if request.internal_port is None and request.external_port is not None:
        theirs = _norm(last[INTERNAL_PORT].value) if INTERNAL_PORT in last else ""
        internal = port(INTERNAL_PORT, request.external_port,
                        f"{_FLAGS[EXTERNAL_PORT]}, no {_FLAGS[INTERNAL_PORT]} given",
                        f"pass --internal-port {theirs} (MCI_INTERNAL_PORT={theirs}) to keep yours")
    else:
        internal = port(INTERNAL_PORT, request.internal_port)
    if request.disable_ingress:
        check(INGRESS, False, f"gitlab-mci was asked for {INGRESS}=false ({_FLAGS[INGRESS]}); make them agree",
              shared_ok=True)
    neg_name = None
    if neg:
        neg_name = _neg_name(request.lb_name, external)
        _check_neg(found, last, external, neg_name, request.lb_name or "", carried, notes)
    settings = HelmSettings(node_port=node_port, external_port=external, internal_port=internal,
                            disable_ingress=request.disable_ingress, values_file=request.values_file,
                            carried=frozenset(carried), backends=request.backends,
                            neg_name=neg_name)
    return settings, notes


def _neg_name(lb: str | None, port: int) -> str:
    if not lb:
        raise UserError("--backends neg needs the load balancer's name (--lb / MCI_LB_NAME): the NEG is named after it")
    from gitlab_mci.lb.names import Namer

    return Namer(lb).neg_name(port)


def _check_neg(found: list[Found], last: dict[str, Found], port: int, neg: str, lb: str, carried: set[str],
               notes: list[str]) -> None:
    """The user's own ``cloud.google.com/neg`` annotation: kept when it already exposes the port as our NEG;
    refused by name when it says otherwise (ours would replace it whole, dropping what else it exposes)."""
    need = f"load balancer {lb} needs port {port} exposed as {neg}"
    for f in found:
        if f.key != NEG or not (f.words is not None or f is last[NEG]):
            continue
        where = f"{f.source} sets {NEG}"
        try:
            doc = json.loads(str(f.value))
        except ValueError:
            raise UserError(f"{where}, which is not JSON; {need}") from None
        ports = doc.get("exposed_ports") if isinstance(doc, dict) else None
        entry = ports.get(str(port)) if isinstance(ports, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if entry is None:
            raise UserError(f"{where}, which does not expose port {port}; {need}: add "
                            f'"{port}": {{"name": "{neg}"}} to its exposed_ports')
        if name != neg:
            shown = f"NEG {name!r}" if name else "a NEG named by GKE"
            raise UserError(f"{where}, which exposes port {port} as {shown}; {need}: name it so, or remove it")
    if NEG in last:
        carried.add(NEG)
        notes.append(f"keeping {NEG} from {last[NEG].source} (it exposes port {port} as {neg})")


def check_values_file(settings: HelmSettings) -> None:
    """Our values file, when it exists, must not say other than the settings (it comes after the user's files, so
    it would win); a key it leaves out is left to the user's values and our --set words."""
    path = settings.values_file
    if not path or not Path(path).is_file():
        return
    doc = load_values_file(path)
    want = load_values_text(render_values(settings))
    for key in KEYS:
        has, value = _lookup(doc, key)
        wanted, expected = _lookup(want, key)
        if has and (not wanted or not _same(value, expected)):
            shown = f"{key}={_norm(value)}"
            should = f"{key}={_norm(expected)}" if wanted else f"no {key}"
            raise UserError(f"{path} has {shown}, but with these inputs it should have {should}; write it again "
                            f"with `gitlab-mci helm values --values-file {path}` and the same inputs")


def load_values_text(text: str) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(text) or {}
    assert isinstance(doc, dict)
    return doc


def _is_ours(arg: _Arg, settings: HelmSettings) -> bool:
    if arg.flag in ("--set", "--set-json") and arg.value is not None and len(arg.words) == 2:
        pairs = _assignments(arg.value)
        return (len(pairs) == 1 and set_flag(pairs[0][0]) == arg.flag
                and settings.required_sets().get(pairs[0][0]) == pairs[0][1])
    return (arg.flag == "--values" and len(arg.words) == 2 and settings.values_file is not None
            and arg.value == settings.values_file)


def extra_args(existing: str, settings: HelmSettings) -> str:
    """The new ``HELM_UPGRADE_EXTRA_ARGS``: the user's words, then what gitlab-mci needs, last so they win.

    Idempotent: ``extra_args(extra_args(x, s), s) == extra_args(x, s)``. A ``--set`` that contradicts the settings
    (another service type or node port) is an error naming it rather than silently overridden; :func:`resolve`
    makes settings that agree with the user's values.
    """
    required = settings.required_sets()
    kept: list[str] = []
    for arg in _parse(split_words(existing)):
        if _is_ours(arg, settings):
            continue  # re-added below, in a canonical place
        if arg.flag in _SET_FLAGS and arg.value is not None:
            for key, val in _assignments(arg.value):
                want = required.get(key)
                if want is not None and not _same(val, want):
                    raise UserError(
                        f"HELM_UPGRADE_EXTRA_ARGS: `{' '.join(arg.words)}` sets {key}={val}, but gitlab-mci needs "
                        f"{key}={want}; remove that argument (it would break the global load balancer)"
                    )
        kept.extend(arg.words)
    ours: list[str] = []
    if settings.values_file:
        ours += ["--values", settings.values_file]
    for key, val in required.items():
        ours += [set_flag(key), f"{key}={val}"]
    return " ".join(kept + ours)
