# syntax=docker/dockerfile:1
#
# Image of the bluecore-sidecar. Two stages:
#   build    makes wheels of the project (its delivery hot path compiled with mypyc, see
#            setup.py) and of its generated client package (which owns the
#            datafly.bluecore.v1 modules) and installs them, with the dependencies pinned
#            (by hash) in requirements.lock, into a virtualenv without pip;
#   runtime  the same slim Python base, that virtualenv, a non-root user and nothing else.
#
# tests/test_dockerfile_replay.py runs the RUN lines of the build stage verbatim in a temporary
# directory and starts the result the way ENTRYPOINT/CMD do, so keep those lines free of
# literal paths: refer to the directories through the ENV variables below.
#
# Build:  docker build -t bluecore-sidecar:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .

# The lock is resolved for CPython 3.11; keep the base on that minor version. Pin a digest
# (python:3.11.14-slim-trixie@sha256:...) in your registry mirror for fully repeatable builds.
ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    BUILD_VENV=/opt/build-venv \
    APP_VENV=/opt/bluecore-sidecar \
    WHEELS=/tmp/wheels \
    BLUECORE_COMPILE=1

WORKDIR /src

# A C compiler for mypyc's output, in this stage only (the slim base has none). The stage is
# thrown away, so neither pinned Debian versions nor a cleaned apt cache would reach the image.
# hadolint ignore=DL3008,DL3009
RUN command -v gcc >/dev/null || { apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev; }

# Build tools (pip, setuptools, wheel, mypy for mypyc), pinned by hash; they stay in this stage.
COPY deploy/docker/build-requirements.lock deploy/docker/
RUN python -m venv "$BUILD_VENV" \
 && "$BUILD_VENV/bin/python" -m pip install --require-hashes --no-deps \
        -r deploy/docker/build-requirements.lock

# Runtime dependencies, exactly as locked. The virtualenv gets no pip of its own: the build
# stage's pip installs into it through --python. The build virtualenv gets them too: mypyc
# compiles against their types.
COPY requirements.lock ./
RUN python -m venv --without-pip "$APP_VENV" \
 && "$BUILD_VENV/bin/pip" --python "$APP_VENV/bin/python" install \
        --require-hashes --no-deps -r requirements.lock \
 && "$BUILD_VENV/bin/pip" install --require-hashes --no-deps -r requirements.lock

# The project and bluecore-sidecar-client (not on PyPI, so not in the hashed lock: built from
# this same context), as wheels, without touching the dependencies installed above. pip check
# proves the sidecar's dependency on the client, and everything else, is met.
COPY pyproject.toml setup.py README.md ./
COPY client_stubs/python/pyproject.toml client_stubs/python/README.md client_stubs/python/
COPY client_stubs/python/src/ client_stubs/python/src/
COPY server/ server/
RUN "$BUILD_VENV/bin/pip" wheel --no-build-isolation --no-deps --wheel-dir "$WHEELS" \
        ./client_stubs/python . \
 && "$BUILD_VENV/bin/pip" --python "$APP_VENV/bin/python" install \
        --no-deps --no-index "$WHEELS"/bluecore_sidecar_client-*.whl \
        "$WHEELS"/bluecore_sidecar-*.whl \
 && "$BUILD_VENV/bin/pip" --python "$APP_VENV/bin/python" check


FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="bluecore-sidecar" \
      org.opencontainers.image.description="gRPC sidecar that delivers Datafly Signal events to the Bluecore Events API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# The base image's own pip is an installer the running sidecar never needs; drop it, then add
# the user the sidecar runs as (a fixed number, so Kubernetes can check runAsNonRoot), and the
# directory of the durable queue (SIDECAR_QUEUE_PATH), owned by that user: Docker gives a new
# named volume mounted there the directory's owner, so the sidecar can write its queue file.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 10001 bluecore \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bluecore \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/bluecore-sidecar

COPY --from=build /opt/bluecore-sidecar /opt/bluecore-sidecar

ENV PATH=/opt/bluecore-sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001

# 9464: ops HTTP (/healthz, /readyz, /metrics), bound to all interfaces so kubelet can probe it.
# 50051: the gRPC API. It binds 127.0.0.1 unless SIDECAR_GRPC_ADDRESS says otherwise, so it
# is reachable only from containers in the same pod (or with the variable set, e.g. in docker).
EXPOSE 9464/tcp 50051/tcp

# The sidecar is PID 1: exec form, no shell in between. It installs its own SIGTERM/SIGINT
# handlers (a PID 1 without handlers would ignore them) and starts no child processes, so
# there is nothing for an init to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bluecore-sidecar"]
CMD ["serve"]
