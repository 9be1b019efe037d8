#!/usr/bin/env bash
# Run this example's pipeline on this machine with gitlab-ci-local, against the gitlab-mci simulator.
#
#   examples/auto-devops-two-clusters/local/run.sh [WORKDIR] [gitlab-ci-local options…]
#   e.g. run.sh /tmp/shop                          # the deploy pipeline: deploy, pin, load balancer, status
#        run.sh /tmp/shop --input mci_teardown=true  # a teardown pipeline
#
# WORKDIR (default: a new temporary directory) gets a copy of the example as a git repository, the simulator's state
# (WORKDIR/sim, started if not running) and gitlab-ci-local's. `gitlab-mci ci-local` puts the includes that
# gitlab-ci-local would download in its cache instead (the gitlab-mci template from this checkout, and
# local/auto-devops.gitlab-ci.yml in place of Auto-DevOps.gitlab-ci.yml) and writes the variables file. Needs gitlab-mci (with the sim extra), kubectl, rsync and gitlab-ci-local
# (`npm install --prefix .tools gitlab-ci-local@4.73.0` at the repository root). Stop the simulator afterwards with
# `gitlab-mci sim down --state-dir WORKDIR/sim`. EXAMPLE_VARIABLES names another scoped-variables file to use instead
# of local/gitlab-ci-local-variables.yml.
set -euo pipefail
example=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$example/../.." && pwd)
work=${1:-$(mktemp -d)}
shift || true
gcl=${GITLAB_CI_LOCAL:-$root/.tools/node_modules/.bin/gitlab-ci-local}
command -v "$gcl" >/dev/null || { echo "error: gitlab-ci-local not found at $gcl (set GITLAB_CI_LOCAL)" >&2; exit 1; }

mkdir -p "$work"
app=$work/app
if [ ! -d "$app/.git" ]; then
  mkdir -p "$app"
  (cd "$example" && tar --exclude=./local -cf - .) | (cd "$app" && tar -xf -)
  git -C "$app" init -q -b main
  git -C "$app" remote add origin https://gitlab.example.com/shop/app.git
  git -C "$app" add -A
  git -C "$app" -c user.name=example -c user.email=example@example.com commit -qm "shop app"
  git -C "$app" update-ref refs/remotes/origin/main HEAD
  git -C "$app" symbolic-ref refs/remotes/origin/HEAD refs/remotes/origin/main
fi

# The same file as a CI/CD component too, for a copy of .gitlab-ci.yml with
# `include: component: gitlab.example.com/platform/gitlab-mci/mci@0.1.0` (`gitlab-mci ci-local` caches only what
# .gitlab-ci.yml includes).
cache=$app/.gitlab-ci-local/includes
mkdir -p "$cache/gitlab.example.com/platform/gitlab-mci/0.1.0/templates"
cp "$root/ci-templates/mci.gitlab-ci.yml" "$cache/gitlab.example.com/platform/gitlab-mci/0.1.0/templates/mci.yml"

gitlab-mci sim status --state-dir "$work/sim" >/dev/null 2>&1 ||
  gitlab-mci sim up --detach --spec "$example/local/sim-spec.yaml" --state-dir "$work/sim"
# The includes in gitlab-ci-local's cache, .gitlab-ci-local-variables.yml (the scoped variables plus the simulator's
# endpoints): what `gitlab-mci ci-local` does for any project.
gitlab-mci ci-local --project-dir "$app" --state-dir "$work/sim" \
  --variables "${EXAMPLE_VARIABLES:-$example/local/gitlab-ci-local-variables.yml}" \
  --template "$root/ci-templates/mci.gitlab-ci.yml" --auto-devops "$example/local/auto-devops.gitlab-ci.yml" >/dev/null

cd "$app"
exec "$gcl" --force-shell-executor "$@"
