#!/usr/bin/env bash
# Makes a fresh Debian machine ready to run the worker and its tests: uv and the locked
# dependencies, a running local RabbitMQ, the tools the chart tests use, and the npm packages
# of the conformance tier. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.8"
if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

rabbit_up() { timeout 10 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
if ! rabbit_up; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null && apt-get install -y --no-install-recommends rabbitmq-server >/dev/null
  fi
  echo "bootstrap: starting RabbitMQ"
  rabbitmq-server -detached
  timeout 120 rabbitmqctl await_startup >/dev/null
fi
# The Prometheus plugin is what the dashboard's queue-depth panels and the alerts read.
rabbitmq-plugins enable --quiet rabbitmq_prometheus >/dev/null

bash .ci/ops-tools.sh
uv sync --frozen --quiet

# The conformance tier (tests/conformance/): the official DatoCMS client, at the exact version
# of its committed package-lock.json. No Node.js or a failed install stops here, loudly.
if ! command -v npm >/dev/null 2>&1; then
  echo "bootstrap: installing Node.js and npm from Debian's packages (tests/conformance)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >/dev/null && apt-get install -y --no-install-recommends nodejs npm >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "bootstrap: npm (Node.js >= 20) is needed by tests/conformance" >&2
  exit 1
fi
(cd tests/conformance/datocms && npm ci --no-audit --no-fund --loglevel=error)
