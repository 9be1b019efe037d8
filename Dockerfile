# syntax=docker/dockerfile:1
# The job image the gitlab-mci CI template runs in: the gitlab-mci command and its runtime dependencies only
# (no simulator, no test tools, no compilers), run as a non-root user.
#   docker build -t gitlab-mci .   &&   docker run --rm gitlab-mci gitlab-mci --version
ARG PYTHON_VERSION=3.11.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, pinned by constraints.txt (.ci/freeze_constraints.py): this layer changes only with them.
# Wheels only, so nothing is ever compiled and no compiler is needed.
COPY constraints.txt ./
RUN python -m venv /opt/gitlab-mci \
 && /opt/gitlab-mci/bin/pip install --only-binary=:all: --requirement constraints.txt
# The package itself, without extras; its dependencies are all installed (and pinned) above.
COPY pyproject.toml README.md ./
COPY gitlab_mci ./gitlab_mci
RUN /opt/gitlab-mci/bin/pip install --no-deps --constraint constraints.txt . \
 && /opt/gitlab-mci/bin/pip check \
 && /opt/gitlab-mci/bin/gitlab-mci --version \
 && /opt/gitlab-mci/bin/pip uninstall --yes pip setuptools

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="gitlab-mci" \
      org.opencontainers.image.description="One global Google Cloud load balancer in front of a GitLab Auto DevOps app on several GKE clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 mci \
 && useradd --uid 10001 --gid mci --create-home --shell /bin/bash mci
COPY --from=build /opt/gitlab-mci /opt/gitlab-mci
ENV PATH=/opt/gitlab-mci/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER mci:mci
WORKDIR /home/mci
# No entrypoint: GitLab runs the job's script with the image's shell.
ENTRYPOINT []
CMD ["gitlab-mci", "--help"]
