"""The CI template: GitLab's CI schema for every YAML document, inputs, and the shape of the jobs it adds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitlab_mci.sim.autodeploy import values_for
from tests.ci import render

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "ci-templates" / "mci.gitlab-ci.yml"
EXAMPLE = ROOT / "examples" / "auto-devops-two-clusters"
EXAMPLE_INPUTS = {"environments": ["prod1", "prod2"], "node_port": 30999, "lb_name": "shop", "release": "shop",
                  "disable_ingress": True, "teardown": False}
OUR_JOBS = {"mci-check", "mci-check-staging", "mci-check-review", "mci-pin", "mci-expose", "mci-export", "mci-lb",
            "mci-status",
            "mci-teardown", "mci-drain", "mci-undrain", "mci-takeover"}
# Auto DevOps' deploy jobs: the template gives each the teardown rule first (production ones also the hook).
AUTO_DEVOPS_DEPLOYS = {"production", "production_manual", "staging", "review", "canary",
                       *(f"{kind}rollout {pct}%" for kind in ("", "timed ") for pct in (10, 25, 50, 100))}
TEARDOWN_NEVER = {"if": '"false" == "true" || $MCI_TEARDOWN == "true"', "when": "never"}


def check_schema(tmp_path: Path, documents: dict[str, str]) -> None:
    """Validate each YAML document on its own (check-jsonschema refuses multi-document files)."""
    paths = []
    for name, text in documents.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                           "--data-transform", "gitlab-ci", *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def documents(path: Path) -> dict[str, str]:
    head, sep, body = path.read_text().partition("\n---\n")
    return {f"{path.stem}-header": head, f"{path.stem}-body": body} if sep else {path.stem: head}


def rendered(inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = render.render(TEMPLATE.read_text(), inputs)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Schema


def test_every_document_of_the_template_validates_against_gitlabs_ci_schema(tmp_path: Path) -> None:
    docs = documents(TEMPLATE)
    assert len(docs) == 2  # the spec header, then the jobs
    check_schema(tmp_path, docs)


@pytest.mark.parametrize("inputs", [
    {},
    EXAMPLE_INPUTS,
    {**EXAMPLE_INPUTS, "mode": "hosted", "teardown": True, "release_ip": True, "scheme": "EXTERNAL",
     "certificates": "shop-2026,shop-2027", "https_redirect": True, "static_ip": "shop-ip", "internal_port": "8080"},
    {**EXAMPLE_INPUTS, "mode": "gateway", "config_context": "prod1"},
    {**EXAMPLE_INPUTS, "takeover_address": "web-ip", "static_ip": "web-ip", "certificates": "mci1-ssl--shop",
     "scheme": "EXTERNAL"},
], ids=["defaults", "example", "hosted-teardown-https", "gateway", "takeover"])
def test_rendered_template_validates(tmp_path: Path, inputs: dict[str, Any]) -> None:
    check_schema(tmp_path, {"rendered": render.dump(rendered(inputs))})


def test_example_and_its_local_auto_devops_stand_in_validate(tmp_path: Path) -> None:
    docs = {**documents(EXAMPLE / ".gitlab-ci.yml"), **documents(EXAMPLE / "local" / "auto-devops.gitlab-ci.yml")}
    check_schema(tmp_path, docs)
    spec, _ = render.split((EXAMPLE / ".gitlab-ci.yml").read_text())
    assert render.resolve(spec, {}) == {"mci_teardown": False}  # the input `gitlab-mci gitlab teardown` sets


def test_example_includes_the_template_with_inputs_the_template_accepts() -> None:
    body = render.load((EXAMPLE / ".gitlab-ci.yml").read_text().partition("\n---\n")[2])
    ours = [item for item in body["include"] if item.get("file") == "/ci-templates/mci.gitlab-ci.yml"]
    assert len(ours) == 1 and ours[0]["project"] == "platform/gitlab-mci"
    assert body["include"][0] == {"template": "Auto-DevOps.gitlab-ci.yml"}  # Auto DevOps first: we extend its jobs
    inputs = {**ours[0]["inputs"], "teardown": False}  # `$[[ inputs.mci_teardown ]]` of the project's own spec
    spec, _ = render.split(TEMPLATE.read_text())
    render.resolve(spec, inputs)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


@pytest.mark.parametrize(("inputs", "message"), [
    ({"mode": "fleet"}, "not in the list of allowed options"),
    ({"node_port": "30999"}, "not a number"),
    ({"environments": "prod1"}, "not a array"),
    ({"lb_name": "Shop_1"}, "does not match required regex"),
    ({"internal_port": "http"}, "does not match required regex"),
    ({"scheme": "INTERNAL"}, "not in the list of allowed options"),
    ({"node-port": 30999}, "unknown input"),
    ({"release": "Shop"}, "does not match required regex"),
    ({"takeover_address": "web-ip; rm -rf /"}, "does not match required regex"),
])
def test_inputs_gitlab_would_refuse(inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(render.InputError, match=message):
        rendered(inputs)


def test_every_declared_input_is_used() -> None:
    spec, body = render.split(TEMPLATE.read_text())
    used = set(render._BLOCK.findall(body))
    assert used == set(spec["inputs"])


# ---------------------------------------------------------------------------------------------------------------------
# Jobs


def test_the_template_adds_its_jobs_and_touches_only_the_production_deploys() -> None:
    body = render.expand_references(rendered(EXAMPLE_INPUTS))
    jobs = {name for name in body if not name.startswith(".")}
    assert jobs == OUR_JOBS | AUTO_DEVOPS_DEPLOYS
    # Nothing that would replace Auto DevOps' pipeline-wide settings (arrays and scalars replace, they do not merge).
    assert not {"stages", "workflow", "variables", "default", "image", "include"} & set(body)
    for name in ("production", "production_manual"):
        job = body[name]
        # Merged into Auto DevOps' job; no before_script, which the project's own would replace.
        assert set(job) == {"parallel", "environment", "variables", "script", "rules"}
        assert job["parallel"] == {"matrix": [{"MCI_ENVIRONMENT": ["prod1", "prod2"]}]}
        assert job["environment"] == {"name": "$MCI_ENVIRONMENT", "deployment_tier": "production"}
        assert job["variables"]["MCI_NODE_PORT"] == 30999 and job["variables"]["MCI_RELEASE"] == "shop"
    for name in AUTO_DEVOPS_DEPLOYS - {"production", "production_manual"}:
        assert set(body[name]) == {"rules"}, name  # only their rules, with the teardown rule first


def test_auto_devops_deploy_jobs_keep_their_rules_behind_the_teardown_rule() -> None:
    # The stand-in carries Auto DevOps' rules (Jobs/Deploy.gitlab-ci.yml); the template must change nothing but the
    # teardown rule in front of them.
    stand_in = render.load((EXAMPLE / "local" / "auto-devops.gitlab-ci.yml").read_text())
    body = render.expand_references(rendered(EXAMPLE_INPUTS))
    def own_rules(name: str) -> Any:
        job = stand_in[name]
        return job["rules"] if "rules" in job else own_rules(job["extends"])

    for name in AUTO_DEVOPS_DEPLOYS:
        assert body[name]["rules"][0] == TEARDOWN_NEVER, name
        assert body[name]["rules"][1:] == own_rules(name), name


def test_the_production_deploy_script_runs_the_hook_then_auto_devops_own_steps() -> None:
    raw = rendered(EXAMPLE_INPUTS)["production"]["script"]
    assert raw == [render.Reference([".mci-deploy", "script"]), render.Reference([".production", "script"])]


def test_variable_values_are_strings_or_numbers_as_gitlab_requires() -> None:
    # GitLab refuses `VAR: true` ("variables config should be a hash of key value pairs"); boolean inputs interpolated
    # on their own stay booleans, so they must never be a variable's whole value.
    body = rendered({**EXAMPLE_INPUTS, "disable_ingress": True, "https_redirect": True, "release_ip": True})
    for name, job in body.items():
        for key, value in (job.get("variables") or {}).items():
            assert isinstance(value, str | int | float) and not isinstance(value, bool), (name, key, value)


def test_boolean_inputs_reach_the_jobs_as_true_or_false_unless_a_variable_overrides_them() -> None:
    body = render.expand_references(rendered({**EXAMPLE_INPUTS, "https_redirect": True, "release_ip": False}))
    line = body[".mci-settings"]["script"][1]
    assert 'MCI_HTTPS_REDIRECT="${MCI_HTTPS_REDIRECT:-true}"' in line
    assert 'MCI_RELEASE_IP="${MCI_RELEASE_IP:-false}"' in line
    for job in ("mci-check", "mci-lb", "mci-teardown"):
        assert body[job]["script"][1] == line, job
    assert body[".mci-deploy"]["script"][1] == line


def test_pin_jobs_one_per_environment_without_a_deployment_after_the_deploys() -> None:
    pin = rendered(EXAMPLE_INPUTS)["mci-pin"]
    assert pin["parallel"] == {"matrix": [{"MCI_ENVIRONMENT": ["prod1", "prod2"]}]}
    assert pin["environment"] == {"name": "$MCI_ENVIRONMENT", "action": "prepare"}
    assert [(n["job"], n["optional"]) for n in pin["needs"]] == [("production", True), ("production_manual", True)]
    assert 'if [ "$MCI_MODE" = self-managed ]; then gitlab-mci nodeport pin; fi' in pin["script"]
    # One file per environment: parallel jobs on a shell runner share the directory.
    assert pin["artifacts"] == {"reports": {"dotenv": "mci-pin-$CI_ENVIRONMENT_SLUG.env"}}


def test_load_balancer_job_waits_for_every_environment_holds_a_resource_group_and_publishes_the_url() -> None:
    lb = rendered(EXAMPLE_INPUTS)["mci-lb"]
    assert [(n["job"], n.get("optional", False)) for n in lb["needs"]] == [
        ("production", True), ("production_manual", True), ("mci-pin", True), ("mci-expose", True),  # as backends says
        ("mci-export", True),  # gateway mode
        ("mci-takeover", True)]  # only in a takeover pipeline
    assert lb["resource_group"] == "mci-lb-shop"
    assert lb["environment"] == {"name": "global", "url": "$MCI_URL", "on_stop": "mci-teardown"}
    assert lb["artifacts"] == {"reports": {"dotenv": "mci.env"}}
    assert "gitlab-mci lb apply --dotenv mci.env" in "\n".join(s for s in lb["script"] if isinstance(s, str))
    assert lb["extends"] == [".mci-rules", ".mci-google"]
    body = rendered(EXAMPLE_INPUTS)
    assert body[".mci-google"]["id_tokens"]["GITLAB_OIDC_TOKEN"]["aud"].startswith("https://iam.googleapis.com/")
    assert "gitlab-mci auth gitlab-oidc --format export" in body[".mci-google"]["script"][0]


def test_teardown_is_the_environments_stop_action_manual_or_automatic_in_a_teardown_pipeline() -> None:
    body = rendered(EXAMPLE_INPUTS)
    down = body["mci-teardown"]
    assert down["environment"] == {"name": "global", "action": "stop"}
    assert down["resource_group"] == body["mci-lb"]["resource_group"]
    assert down["needs"] == []
    assert down["rules"] == [
        {"if": '"false" == "true" || $MCI_TEARDOWN == "true"'},
        {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual", "allow_failure": True},
    ]
    assert rendered({**EXAMPLE_INPUTS, "teardown": True})["mci-teardown"]["rules"][0] == {
        "if": '"true" == "true" || $MCI_TEARDOWN == "true"'}
    # In a teardown pipeline every other gitlab-mci job is off.
    assert render.expand_references(body)[".mci-rules"]["rules"][0] == TEARDOWN_NEVER
    assert body["mci-status"]["extends"][0] == body["mci-lb"]["extends"][0] == ".mci-rules"
    assert body["mci-pin"]["extends"] == body["mci-check"]["extends"] == ".mci-rules"


def test_cluster_maintenance_gets_a_manual_drain_and_undrain_job_per_production_environment() -> None:
    body = render.expand_references(rendered(EXAMPLE_INPUTS))
    drain, undrain = body["mci-drain"], body["mci-undrain"]
    assert drain["parallel"] == {"matrix": [{"MCI_ENVIRONMENT": ["prod1", "prod2"]}]}  # "mci-drain: [prod1]", ...
    # Never alongside an apply or a teardown of the same load balancer; with its credentials, creating no deployment.
    assert drain["resource_group"] == body["mci-lb"]["resource_group"] == "mci-lb-shop"
    assert drain["environment"] == {"name": "global", "action": "access"}
    assert [n["job"] for n in drain["needs"]] == ["mci-pin", "mci-expose", "mci-export", "mci-lb"]  # the contexts
    assert drain["rules"] == [TEARDOWN_NEVER, {"if": '"self-managed" == "hosted"', "when": "never"},
                              {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual",
                               "allow_failure": True}]  # manual, and never blocking the pipeline
    assert drain["variables"]["MCI_TRAFFIC_COMMAND"] == "drain" and drain["variables"]["MCI_LB_NAME"] == "shop"
    assert 'gitlab-mci lb "$MCI_TRAFFIC_COMMAND" "$mci_cluster"' in "\n".join(drain["script"])
    assert undrain == {"extends": "mci-drain", "variables": {"MCI_TRAFFIC_COMMAND": "undrain"}}
    hosted = rendered({**EXAMPLE_INPUTS, "mode": "hosted"})["mci-drain"]["rules"][1]
    assert hosted == {"if": '"hosted" == "hosted"', "when": "never"}  # self-managed mode only, for now


def test_the_drain_job_finds_the_environments_cluster_as_the_pin_job_published_it() -> None:
    script = render.expand_references(rendered(EXAMPLE_INPUTS))["mci-drain"]["script"]
    lines = [line for line in script if isinstance(line, str) and line.startswith("mci_")]
    for env, published, expected in (("prod1", {"MCI_PIN_CONTEXT_PROD1": "gke_p_us_prod1"}, "gke_p_us_prod1"),
                                     ("Prod-EU", {"MCI_PIN_CONTEXT_PROD_EU": "eu"}, "eu"),
                                     ("prod2", {}, "prod2")):
        proc = subprocess.run(["sh", "-ec", "\n".join([*lines, 'printf %s "$mci_cluster"'])], capture_output=True,
                              text=True, env={"PATH": os.environ["PATH"], "MCI_ENVIRONMENT": env, **published})
        assert proc.returncode == 0 and proc.stdout == expected, proc.stderr


# ---------------------------------------------------------------------------------------------------------------------
# The deploy hook: plain sh in the deploy image, the same arguments as `gitlab-mci helm extra-args`


def _hook(inputs: dict[str, Any], existing: str | None) -> str:
    body = render.expand_references(rendered({**EXAMPLE_INPUTS, **inputs}))
    job = body["production"]
    env = {"PATH": os.environ["PATH"], "CI_ENVIRONMENT_SLUG": "prod1",
           **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in job["variables"].items()}}
    if existing is not None:
        env["HELM_UPGRADE_EXTRA_ARGS"] = existing
    hook = body[".mci-deploy"]["script"]
    assert job["script"][:len(hook)] == hook  # the hook, then Auto DevOps' steps (not in this rendering)
    script = "set -eu\n" + "\n".join(hook) + '\nprintf "%s" "${HELM_UPGRADE_EXTRA_ARGS-<unset>}"'
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()[-1] if proc.stdout.strip() else ""


RECIPE_VALUES = "service:\n  type: NodePort\n  externalPort: 8080\n  internalPort: 8080\n"  # the recipe's values.yaml


def _gitlab_mci_helm_extra_args(inputs: dict[str, Any], existing: str | None) -> subprocess.CompletedProcess[str]:
    """`gitlab-mci helm extra-args` in the current directory (the checkout) with the production job's variables."""
    body = render.expand_references(rendered({**EXAMPLE_INPUTS, **inputs}))
    job = body["production"]
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "CI_ENVIRONMENT_SLUG": "prod1",
           **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in job["variables"].items()}}
    if existing is not None:
        env["HELM_UPGRADE_EXTRA_ARGS"] = existing
    script = "set -eu\n" + "\n".join(body[".mci-settings"]["script"]) + "\ngitlab-mci helm extra-args"
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(("inputs", "existing", "user_values"), [
    ({}, None, None),
    ({}, "", None),
    ({"disable_ingress": False}, "--set image.pullPolicy=Always --values .gitlab/extra.yaml", None),
    ({"node_port": 31000, "service_port": "8080"}, "--atomic --timeout 10m", None),
    ({"service_port": "8080", "internal_port": "8081"}, None, None),
    ({"service_port": "5000"}, None, None),
    ({"internal_port": "8081"}, None, None),
    ({}, "--set service.type=NodePort --set service.nodePort=30999 --set ingress.enabled=false", None),
    # The recipe's setup: the project's own values on 8080, the template's port inputs left at their defaults.
    ({}, "--atomic --values values.yaml", "values.yaml"),
    ({}, "--atomic", ".gitlab/auto-deploy-values.yaml"),
    ({}, "--set service.externalPort=8080 --set service.internalPort=8080", None),
    # Asked explicitly, and the same as the user's values.
    ({"service_port": "8080"}, "--values values.yaml", "values.yaml"),
    ({"service_port": "8080", "internal_port": "8080"}, None, ".gitlab/auto-deploy-values.yaml"),
    # backends neg: the NEG annotation instead of the NodePort, merged by Helm into the user's own annotations.
    ({"backends": "neg"}, None, None),
    ({"backends": "neg", "disable_ingress": False}, "--set image.pullPolicy=Always --values .gitlab/extra.yaml", None),
    ({"backends": "neg", "service_port": "8080"}, "--atomic", None),
], ids=["unset", "empty", "user-args", "ports", "both-ports", "chart-port", "internal-only", "already-there",
        "recipe-values-yaml", "recipe-auto-deploy-values", "recipe-set-flags", "asked-as-values-yaml",
        "asked-as-auto-deploy-values", "neg", "neg-user-annotations", "neg-port"])
def test_deploy_hook_exports_what_gitlab_mci_helm_extra_args_prints(inputs: dict[str, Any], existing: str | None,
                                                                    user_values: str | None, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook cannot read the user's values (no gitlab-mci in the deploy image): it must append what the real
    command appends when it reads them, and that must leave the user's ports as they are."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "extra.yaml").write_text("service:\n  annotations: {a: b}\n")
    if user_values:
        (tmp_path / user_values).write_text(RECIPE_VALUES)
    cli = _gitlab_mci_helm_extra_args(inputs, existing)
    assert cli.returncode == 0, cli.stderr
    want = cli.stdout.strip()
    got = _hook(inputs, existing)
    assert got.split() == want.split()
    deploy_files = [".gitlab/auto-deploy-values.yaml"] if user_values == ".gitlab/auto-deploy-values.yaml" else []
    assert values_for(got, deploy_files) == values_for(want, deploy_files)
    assert _hook(inputs, got) == got  # running the hook on its own output changes nothing
    if inputs.get("backends") == "neg":
        service = values_for(got, deploy_files)["service"]
        port = inputs.get("service_port", "5000")
        assert service["type"] == "ClusterIP" and "nodePort" not in service
        assert service["annotations"] == {
            **({"a": "b"} if ".gitlab/extra.yaml" in (existing or "") else {}),
            "cloud.google.com/neg": f'{{"exposed_ports":{{"{port}":{{"name":"gmci-neg-shop-{port}"}}}}}}'}
    if user_values or "8080" in (existing or ""):
        service = values_for(got, deploy_files)["service"]
        assert (service["type"], service["nodePort"], service["externalPort"], service["internalPort"]) == (
            "NodePort", 30999, 8080, 8080)


def test_deploy_hook_leaves_hosted_mode_alone() -> None:
    assert _hook({"mode": "hosted"}, "--set a=b") == "--set a=b"
    assert _hook({"mode": "hosted"}, None) == "<unset>"


def test_check_job_refuses_contradicting_helm_arguments_before_the_pipeline_builds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check = render.expand_references(rendered({**EXAMPLE_INPUTS, "release": ""}))["mci-check"]
    assert check["stage"] == ".pre"
    assert check["environment"] == {"name": "$MCI_ENVIRONMENT", "action": "prepare"}
    venv_bin = str(Path(sys.executable).parent)
    base = {"PATH": f"{venv_bin}:{os.environ['PATH']}", "CI_ENVIRONMENT_NAME": "prod1", "CI_ENVIRONMENT_SLUG": "prod1",
            "HELM_RELEASE_NAME": "shop",
            **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in check["variables"].items()}}
    script = "set -e\n" + "\n".join(check["script"])

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", script], env={**base, **extra}, capture_output=True, text=True)

    ok = run(HELM_UPGRADE_EXTRA_ARGS="--set replicaCount=2")
    assert ok.returncode == 0, ok.stderr
    assert "HELM_UPGRADE_EXTRA_ARGS=--set replicaCount=2 --set service.type=NodePort" in ok.stdout
    bad = run(HELM_UPGRADE_EXTRA_ARGS="--set service.type=ClusterIP")
    assert bad.returncode != 0
    assert "service.type=ClusterIP" in bad.stderr
    assert (tmp_path / "mci-check-prod1.env").read_text() == (
        "MCI_PROD_CONTEXT_PROD1=\nMCI_PROD_NAMESPACE_PROD1=default\nMCI_PROD_RELEASE_PROD1=shop\n")
    no_service = run(HELM_RELEASE_NAME="")
    assert no_service.returncode != 0
    assert "set the release input" in no_service.stderr


def _check(inputs: dict[str, Any], replace: tuple[str, str] = ("", ""), **extra: str
           ) -> subprocess.CompletedProcess[str]:
    """The mci-check job of prod1, run in the current directory (the project's checkout)."""
    check = render.expand_references(rendered({**EXAMPLE_INPUTS, **inputs}))["mci-check"]
    script = "set -eo pipefail\n" + "\n".join(check["script"])
    if replace[0]:
        script = script.replace(*replace)
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "CI_ENVIRONMENT_NAME": "prod1",
           "CI_ENVIRONMENT_SLUG": "prod1",
           **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in check["variables"].items()}, **extra}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("where", ["--values values.yaml", ".gitlab/auto-deploy-values.yaml"])
def test_check_job_passes_a_project_whose_own_values_run_the_app_on_8080_with_the_port_inputs_left_empty(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check = render.expand_references(rendered(EXAMPLE_INPUTS))["mci-check"]
    # It reads the user's values files, so it needs the repository's files (GitLab's default fetch).
    assert "GIT_STRATEGY" not in check["variables"]
    (tmp_path / ".gitlab").mkdir()
    if where.startswith("--values"):
        (tmp_path / "values.yaml").write_text(RECIPE_VALUES)
        existing = "--atomic --values values.yaml"
    else:
        (tmp_path / where).write_text(RECIPE_VALUES)
        existing = "--atomic"
    ok = _check({}, HELM_UPGRADE_EXTRA_ARGS=existing)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "keeping service.externalPort=8080" in ok.stderr and "keeping service.internalPort=8080" in ok.stderr
    assert (f"HELM_UPGRADE_EXTRA_ARGS={existing} --set service.type=NodePort --set service.nodePort=30999 "
            "--set ingress.enabled=false\n") in ok.stdout

    # The service_port input given as 5000: that is a request the user's 8080 contradicts, refused by name.
    refused = _check({"service_port": "5000"}, HELM_UPGRADE_EXTRA_ARGS=existing)
    assert refused.returncode != 0
    source = ("values.yaml (`--values values.yaml` in HELM_UPGRADE_EXTRA_ARGS)" if where.startswith("--values")
              else ".gitlab/auto-deploy-values.yaml (the values file auto-deploy passes)")
    assert f"gitlab-mci: error: {source} sets service.externalPort=8080, but gitlab-mci was asked for " \
           "service.externalPort=5000" in refused.stderr


def test_check_job_refuses_when_the_deploy_hook_would_pass_other_words_than_gitlab_mci_computes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook is sh and cannot read the user's values; the check runs it next to the real command and stops the
    pipeline before any deploy if they disagree (here: a hook drifted to force the chart's container port)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "values.yaml").write_text(RECIPE_VALUES)
    body = render.expand_references(rendered(EXAMPLE_INPUTS))
    hook = body[".mci-helm-args"]["script"]
    assert all(line in body["mci-check"]["script"] for line in hook)  # the check runs the deploy's own hook
    assert all(line in body[".mci-deploy"]["script"] for line in hook)
    drift = ('mci_args="--set service.type=NodePort', 'mci_args="--set service.internalPort=5000 --set service.type=NodePort')
    assert drift[0] in "\n".join(hook)
    drifted = _check({}, drift, HELM_UPGRADE_EXTRA_ARGS="--values values.yaml")
    assert drifted.returncode != 0
    assert drifted.stderr.splitlines()[-1] == (
        "gitlab-mci: error: the production deploy to prod1 would run with HELM_UPGRADE_EXTRA_ARGS=--values values.yaml "
        "--set service.internalPort=5000 --set service.type=NodePort --set service.nodePort=30999 "
        "--set ingress.enabled=false, but from your values gitlab-mci computes --values values.yaml "
        "--set service.type=NodePort --set service.nodePort=30999 --set ingress.enabled=false; set the template's "
        "service_port and internal_port inputs to your values' ports")
    assert _check({}, HELM_UPGRADE_EXTRA_ARGS="--values values.yaml").returncode == 0


def _guard(**env: str) -> subprocess.CompletedProcess[str]:
    guard = render.expand_references(rendered(EXAMPLE_INPUTS))[".mci-guard"]
    base = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in guard["variables"].items()}}
    return subprocess.run(["sh", "-c", "set -e\n" + "\n".join(guard["script"])], env={**base, **env},
                          capture_output=True, text=True)


@pytest.mark.parametrize(("env", "refused"), [
    # a review app in a branch pipeline (production not checked there): only the release name is known
    ({"CI_ENVIRONMENT_NAME": "review/fix-1", "CI_ENVIRONMENT_SLUG": "review-fix-1-abcd"}, False),
    ({"CI_ENVIRONMENT_NAME": "review/fix-1", "CI_ENVIRONMENT_SLUG": "review-fix-1-abcd", "HELM_RELEASE_NAME": "shop"},
     True),
    # staging in a default-branch pipeline, next to mci-check's dotenv of prod1 (context prod1, namespace shop)
    ({"CI_ENVIRONMENT_NAME": "staging", "CI_ENVIRONMENT_SLUG": "staging", "KUBE_CONTEXT": "prod1",
      "KUBE_NAMESPACE": "shop", "HELM_RELEASE_NAME": "shop"}, True),
    ({"CI_ENVIRONMENT_NAME": "staging", "CI_ENVIRONMENT_SLUG": "staging", "KUBE_CONTEXT": "prod1",
      "KUBE_NAMESPACE": "shop"}, False),
    ({"CI_ENVIRONMENT_NAME": "staging", "CI_ENVIRONMENT_SLUG": "staging", "KUBE_CONTEXT": "staging-cluster",
      "KUBE_NAMESPACE": "shop", "HELM_RELEASE_NAME": "shop"}, False),
], ids=["review-own-release", "review-production-release", "staging-on-production", "staging-own-release",
        "staging-other-cluster"])
def test_staging_or_review_deploy_that_would_write_a_production_release_is_refused(env: dict[str, str],
                                                                                    refused: bool) -> None:
    if env["CI_ENVIRONMENT_NAME"] == "staging":
        env = {**env, "MCI_PROD_CONTEXT_PROD1": "prod1", "MCI_PROD_NAMESPACE_PROD1": "shop",
               "MCI_PROD_RELEASE_PROD1": "shop"}
    proc = _guard(**env)
    assert (proc.returncode != 0) is refused, proc.stdout + proc.stderr
    if refused:
        assert proc.stderr.startswith("gitlab-mci: error: ") and "release input" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------------
# backends: neg — the expose job instead of the pin job, NEG backends for the load balancer


def _rule_matches(rule: dict[str, Any]) -> bool:
    """Evaluate a rendered `"a" == "b" && …` / `||` rule of string comparisons only (what these rules use)."""
    expr = rule["if"].replace("&&", " and ").replace("||", " or ")
    return bool(eval(expr, {"__builtins__": {}}))  # literals and ==/!= only, from our own template


def test_with_neg_backends_the_expose_job_replaces_the_pin_job() -> None:
    for inputs, pin, expose, export in (({}, True, False, False), ({"backends": "neg"}, False, True, False),
                                        ({"backends": "neg", "mode": "hosted"}, True, False, False),
                                        ({"mode": "gateway"}, False, False, True),
                                        ({"mode": "gateway", "backends": "neg"}, False, False, True)):
        body = render.expand_references(rendered({**EXAMPLE_INPUTS, **inputs}))
        # The first rule of each is its input switch (`when: never` when it matches); the rest are .mci-rules.
        assert (not _rule_matches(body["mci-pin"]["rules"][0])) is pin, inputs
        assert (not _rule_matches(body["mci-expose"]["rules"][0])) is expose, inputs
        assert (not _rule_matches(body["mci-export"]["rules"][0])) is export, inputs
        assert body["mci-pin"]["rules"][1:] == body["mci-expose"]["rules"][1:] == body["mci-export"]["rules"][1:] \
            == body[".mci-rules"]["rules"]
    expose = render.expand_references(rendered({**EXAMPLE_INPUTS, "backends": "neg"}))["mci-expose"]
    assert expose["extends"] == "mci-pin"  # its environment, needs, stage, variables and dotenv report
    assert 'gitlab-mci neg expose --dotenv "mci-pin-$CI_ENVIRONMENT_SLUG.env"' in expose["script"]
    assert not [line for line in expose["script"] if isinstance(line, str) and "nodeport" in line]


def test_expose_job_publishes_the_context_then_what_neg_expose_appends(tmp_path: Path) -> None:
    body = render.expand_references(rendered({**EXAMPLE_INPUTS, "backends": "neg"}))
    script = [line for line in body["mci-expose"]["script"] if isinstance(line, str)]
    fake = tmp_path / "bin"
    fake.mkdir()
    # gitlab-mci itself is tested in tests/test_neg_expose.py; here: the job keeps what it appends to the report.
    (fake / "gitlab-mci").write_text('#!/bin/sh\nprintf "MCI_NEG_NAME=gmci-neg-shop-5000\\n" >> "$4"\n')
    (fake / "gitlab-mci").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "CI_ENVIRONMENT_SLUG": "prod1", "KUBE_CONTEXT": "gke_p_prod1",
           "KUBE_NAMESPACE": "shop", **{k: str(v) for k, v in body["mci-pin"]["variables"].items()}}  # extends mci-pin
    proc = subprocess.run(["sh", "-ec", "\n".join(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mci-pin-prod1.env").read_text().splitlines() == [
        "MCI_PIN_CONTEXT_PROD1=gke_p_prod1", "MCI_PIN_NAMESPACE_PROD1=shop", "MCI_NEG_NAME=gmci-neg-shop-5000"]


def test_with_neg_backends_the_load_balancer_job_applies_neg_backends(tmp_path: Path) -> None:
    fake = tmp_path / "gitlab-mci"
    fake.write_text('#!/bin/sh\necho "gitlab-mci $*"\n')
    fake.chmod(0o755)
    for inputs, line in (({}, "gitlab-mci lb apply --dotenv mci.env"),
                         ({"backends": "neg"}, "gitlab-mci lb apply --backends neg --dotenv mci.env"),
                         ({"backends": "neg", "mode": "hosted"}, "gitlab-mci hosted apply --dotenv mci.env")):
        job = render.expand_references(rendered({**EXAMPLE_INPUTS, **inputs}))["mci-lb"]
        [apply] = [step for step in job["script"] if isinstance(step, str) and 'case "$MCI_MODE"' in step]
        env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **{k: str(v) for k, v in job["variables"].items()}}
        proc = subprocess.run(["sh", "-ec", apply], env=env, capture_output=True, text=True)
        assert proc.stdout.strip() == line, (inputs, proc.stderr)


def test_check_job_with_neg_backends_passes_the_hooks_words_and_refuses_another_neg_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok = _check({"backends": "neg"}, HELM_UPGRADE_EXTRA_ARGS="--set replicaCount=2")
    assert ok.returncode == 0, ok.stderr
    assert "--set replicaCount=2 --set-json service.annotations.cloud\\.google\\.com/neg=" in ok.stdout
    (tmp_path / "prod.yaml").write_text(
        "service:\n  annotations:\n    cloud.google.com/neg: '{\"exposed_ports\":{\"5000\":{\"name\":\"x\"}}}'\n")
    bad = _check({"backends": "neg"}, HELM_UPGRADE_EXTRA_ARGS="--values prod.yaml")
    assert bad.returncode != 0
    assert "prod.yaml (`--values prod.yaml` in HELM_UPGRADE_EXTRA_ARGS) sets service.annotations" in bad.stderr


def test_check_job_with_neg_backends_refuses_a_users_own_neg_annotation_the_hook_would_replace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's annotation names our NEG and also exposes 9090: helm extra-args keeps it, but the deploy hook
    (which cannot read values files) would set ours over it, dropping 9090; mci-check stops that, saying why."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".gitlab").mkdir()
    (tmp_path / ".gitlab" / "auto-deploy-values.yaml").write_text(
        "service:\n  annotations:\n    cloud.google.com/neg: "
        "'{\"exposed_ports\":{\"5000\":{\"name\":\"gmci-neg-shop-5000\"},\"9090\":{}}}'\n")
    bad = _check({"backends": "neg"})
    assert bad.returncode != 0
    assert bad.stderr.strip().endswith(
        "leave the cloud.google.com/neg annotation out of your values (the deploy sets it)"), bad.stderr


def test_a_project_moving_from_kubemci_gets_one_manual_takeover_job_that_the_load_balancer_job_waits_for() -> None:
    inputs = {**EXAMPLE_INPUTS, "takeover_address": "web-ip", "static_ip": "web-ip"}
    body = render.expand_references(rendered(inputs))
    job = body["mci-takeover"]
    assert job["stage"] == body["mci-lb"]["stage"]
    # the clusters and namespace, by dotenv: from the pins, or the expose jobs with backends: neg
    assert job["needs"] == [{"job": "mci-pin", "optional": True}, {"job": "mci-expose", "optional": True}]
    assert job["resource_group"] == body["mci-lb"]["resource_group"] == "mci-lb-shop"  # never beside an apply
    assert job["environment"] == {"name": "global", "action": "prepare"}  # its credentials, no deployment
    assert job["variables"]["MCI_TAKEOVER_ADDRESS"] == "web-ip" and job["variables"]["MCI_STATIC_IP"] == "web-ip"
    # Manual without allow_failure: blocking, so mci-lb (which needs it) never applies before the takeover is done.
    assert job["rules"][-1] == {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}
    assert job["rules"][0] == TEARDOWN_NEVER
    assert job["rules"][1] == {"if": '"web-ip" == "" || "self-managed" == "hosted"', "when": "never"}
    assert {"job": "mci-takeover", "optional": True, "artifacts": False} in body["mci-lb"]["needs"]
    assert job["script"][-2] == 'gitlab-mci lb takeover --address "$MCI_TAKEOVER_ADDRESS"'
    assert "gitlab-mci lb plan --detailed-exitcode" in job["script"][-1]  # mci-lb's inputs keep what was taken
    assert body[".mci-clusters"]["script"][0] in job["script"]  # --context, --service from the pins, as mci-lb

    # Without the input the job never runs (and mci-lb's need of it is optional); in hosted mode neither.
    off = rendered(EXAMPLE_INPUTS)["mci-takeover"]["rules"][1]
    assert off == {"if": '"" == "" || "self-managed" == "hosted"', "when": "never"}
    hosted = rendered({**inputs, "mode": "hosted"})["mci-takeover"]["rules"][1]
    assert hosted == {"if": '"web-ip" == "" || "hosted" == "hosted"', "when": "never"}


def test_in_gateway_mode_each_environment_exports_its_cluster_and_the_lb_job_applies_the_gateway_once() -> None:
    body = render.expand_references(rendered({**EXAMPLE_INPUTS, "mode": "gateway", "config_context": "prod1"}))
    export = body["mci-export"]
    assert export["extends"] == ["mci-pin", ".mci-google"]  # per environment, after its deploy, with credentials
    script = "\n".join(line for line in export["script"] if isinstance(line, str))
    assert 'gitlab-mci gateway export --context "$KUBE_CONTEXT"' in script
    assert 'mci-pin-$CI_ENVIRONMENT_SLUG.env' in script  # the context and namespace, for mci-lb and the drains
    lb = "\n".join(line for line in body["mci-lb"]["script"] if isinstance(line, str))
    assert lb.count("gitlab-mci gateway apply") == 1 and "gateway export" not in lb
