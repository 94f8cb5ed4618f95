# syntax=docker/dockerfile:1
# bulkops worker image. Multi-stage, after astral-sh/uv-docker-example:
#   builder: uv installs the locked dependencies (own layer, cached while uv.lock is unchanged),
#            then the project itself, non-editable, into /app/.venv: its wheel, which leaves
#            out the emulator and the demo (pyproject.toml, [tool.hatch.build.targets.wheel]).
#   runtime: slim Python with only that virtualenv (which holds the `worker` package);
#            no uv, no compilers, numeric non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# 1. Dependencies only, exactly as locked (no dev group): changes only when uv.lock does.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-install-project --no-dev --no-editable

# 2. The project itself, as its wheel (no emulator, no demo: the image carries what `run` needs).
COPY pyproject.toml uv.lock README.md ./
COPY worker ./worker
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/app/.venv/bin:${PATH}" \
    HOME=/tmp
RUN groupadd --system --gid 10001 bulkops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bulkops
WORKDIR /app
COPY --from=builder --chown=0:0 /app/.venv /app/.venv
USER 10001:10001
# /metrics, /healthz, /readyz (BULKOPS_HTTP_PORT)
EXPOSE 9464
ENTRYPOINT ["python", "-m", "worker"]
CMD ["run"]
