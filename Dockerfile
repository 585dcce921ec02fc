# spendwarden container image: one image, two commands.
#
#   docker build -t spendwarden:0.1.0 .
#   docker run spendwarden:0.1.0                 # the worker (CMD worker)
#   docker run spendwarden:0.1.0 router          # the alert router
#
# Settings are SPENDWARDEN_* environment variables (docs/settings.md); secrets come from files
# (SPENDWARDEN_REDIS_PASSWORD_FILE, ...) mounted by Docker or Kubernetes (docs/security.md).
# docs/operations.md explains the layout. tests/unit/test_deploy_manifests.py checks this file
# statically: no Docker engine runs where the tests run, so the image is never built there.
#
# The base image is pinned to an exact patch tag. In production pin it by digest as well
# (FROM python:3.11.11-slim-bookworm@sha256:<digest>, from `docker buildx imagetools inspect`),
# so a re-pushed tag cannot change what you build; bump both with your dependency updates.

# ---------------------------------------------------------------- builder: wheel + virtualenv
FROM python:3.11.11-slim-bookworm AS builder

# Compilers only here, for any dependency without a wheel for this platform; the runtime
# stage never gets them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so a source change does not reinstall
# them (this layer is cached until the dependency list changes), at the exact versions of
# deploy/constraints.txt so two builds of one commit get the same packages.
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt /tmp/constraints.txt
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install -c /tmp/constraints.txt -r /tmp/requirements.txt

# The project's packages (pyproject.toml [tool.setuptools.package-dir]), built into a wheel
# and installed like any other: no source tree or editable install in the image.
COPY spendwarden/ spendwarden/
COPY streams/ streams/
COPY detectors/ detectors/
COPY rules/ rules/
COPY replay/ replay/
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/spendwarden-*.whl \
    && /opt/venv/bin/spendwarden --help > /dev/null

# ---------------------------------------------------------------- runtime
# Same base as the builder, so the venv's interpreter symlinks resolve.
FROM python:3.11.11-slim-bookworm AS runtime

# A fixed UID/GID, so Kubernetes' runAsUser / fsGroup and file ownership on volumes match.
RUN groupadd --system --gid 10001 spendwarden \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin spendwarden \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/spendwarden

COPY --from=builder /opt/venv /opt/venv

# Starting rules: the playbook pack. Kubernetes mounts a ConfigMap over this directory and
# compose a bind mount; the worker reloads it when a file changes (docs/operations.md).
COPY rules/packs/playbook/rules.yaml /etc/spendwarden/rules/rules.yaml

# HTTP_HOST 0.0.0.0: the default 127.0.0.1 would hide /metrics and the probes from outside
# the container. DATA_DIR: Faust's local folder, writable by the user (a volume in Kubernetes,
# where the root filesystem is read-only). JSON logs for log collectors.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SPENDWARDEN_RULES_DIR=/etc/spendwarden/rules \
    SPENDWARDEN_DATA_DIR=/var/lib/spendwarden \
    SPENDWARDEN_HTTP_HOST=0.0.0.0 \
    SPENDWARDEN_LOG_JSON=true

USER 10001:10001
WORKDIR /var/lib/spendwarden

# 6066: the worker's /metrics, /healthz, /readyz (SPENDWARDEN_HTTP_PORT);
# 6067: the router's (SPENDWARDEN_ROUTER_HTTP_PORT).
EXPOSE 6066 6067

# Liveness for Docker and compose (Kubernetes ignores it and uses its own probes). No curl in
# slim images, so Python asks /healthz; it reads PID 1's command line to know whether this
# container runs the router (its own port) or the worker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; router = b'router' in open('/proc/1/cmdline', 'rb').read().split(b'\\0'); port = os.environ.get('SPENDWARDEN_ROUTER_HTTP_PORT' if router else 'SPENDWARDEN_HTTP_PORT') or ('6067' if router else '6066'); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["spendwarden"]
CMD ["worker"]
