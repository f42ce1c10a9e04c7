#!/usr/bin/env bash
# Build (once) and print the path of a real kube-apiserver v1.20.2.
#
# Usage: integration/apiserver/build.sh
#
#   stdout: exactly one line, the absolute path of the cached binary.
#   stderr: progress log.
#
# Environment:
#   PALISADE_CACHE_DIR  cache root (default /var/cache/palisade). The binary
#                       lives at $PALISADE_CACHE_DIR/kube-apiserver-v1.20.2-p2/kube-apiserver
#   KEEP_SOURCE=1       keep the scratch source tree (path is logged).
#   BUILD_TMPDIR        where the scratch tree goes (default ${TMPDIR:-/tmp}).
#
# Where the source comes from: Debian bookworm's source package `kubernetes`
# (1.20.5+really1.20.2) is the upstream v1.20.2 tree including vendor/. We
# fetch it with `apt-get source` using a PRIVATE apt configuration whose
# deb-src entries are derived from the system's own deb entries, so the
# system's apt setup is never touched and no mirror host is hard-coded.
#
# How it is built: upstream's `make WHAT=cmd/kube-apiserver` (a plain
# `go build` would miss the generated openapi code), in GOPATH mode with
# Debian's Go 1.19, after swapping the vendored modern-go/reflect2 for
# v1.0.2 (Debian source package), without which the binary crashes at run
# time under Go >= 1.18, and after fixing the vendored OpenAPI validator's
# null check, which under Go >= 1.16 takes the empty string "" for null
# (CRDs with `default: ""` and custom resources with "" fields would be
# rejected). Cold build: 6-11 minutes on 2 cores.
set -euo pipefail

readonly K8S_VERSION=v1.20.2
# Upstream commit of the v1.20.2 tag; only used for `version` output so that
# clients (kubectl, helm) see the same info an official binary reports.
readonly K8S_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
readonly GO_BIN=/usr/lib/go-1.19/bin
# Revision of what this script does to the source. Part of the cache key, so
# bump it whenever a change here changes the binary: machines (CI caches,
# dev boxes) holding a binary built by an older build.sh then build afresh
# instead of taking the fast path. The binary still reports $K8S_VERSION.
#   p1 (implicit, directory without suffix): reflect2 v1.0.2 swap
#   p2: + the go-openapi/kube-openapi null-check fix ("" is not null)
readonly BUILD_REV=p2

CACHE_ROOT="${PALISADE_CACHE_DIR:-/var/cache/palisade}"
CACHE_DIR="$CACHE_ROOT/kube-apiserver-$K8S_VERSION-$BUILD_REV"
BINARY="$CACHE_DIR/kube-apiserver"

log() { printf '[apiserver/build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Fast path: nothing to do if the cache is populated.
if [[ -x "$BINARY" ]]; then
    printf '%s\n' "$BINARY"
    exit 0
fi

start_ts=$(date +%s)

# Parallel test runs may all find the cache empty: let one build, the others
# wait for it and then take the fast path.
command -v flock >/dev/null || die "flock (util-linux) is required"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
    log "another build.sh is building $BINARY, waiting for it"
    flock 9
fi
if [[ -x "$BINARY" ]]; then
    printf '%s\n' "$BINARY"
    exit 0
fi

# ---------------------------------------------------------------------------
# Tools. CI machines are fresh, so install what we need (idempotent).
# ---------------------------------------------------------------------------
need_pkgs=()
[[ -x "$GO_BIN/go" ]] || need_pkgs+=(golang-1.19-go)
command -v rsync >/dev/null || need_pkgs+=(rsync)
command -v dpkg-source >/dev/null || need_pkgs+=(dpkg-dev)
command -v make >/dev/null || need_pkgs+=(make)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if ((${#need_pkgs[@]})); then
    log "installing build dependencies: ${need_pkgs[*]}"
    # Output goes to stderr: stdout is reserved for the binary path.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; }
fi

# ---------------------------------------------------------------------------
# Scratch area
# ---------------------------------------------------------------------------
WORK=$(mktemp -d "${BUILD_TMPDIR:-${TMPDIR:-/tmp}}/palisade-kube-apiserver.XXXXXX")
# apt drops privileges to _apt for downloads; it must be able to reach the
# private lists/ and download dirs, and mktemp creates 0700.
chmod 755 "$WORK"
cleanup() {
    if [[ "${KEEP_SOURCE:-0}" == 1 ]]; then
        log "KEEP_SOURCE=1: scratch tree left at $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# Private apt configuration with deb-src entries
# ---------------------------------------------------------------------------
APT_DIR="$WORK/apt"
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
: >"$APT_DIR/sources.list"
if id _apt >/dev/null 2>&1; then
    chown -R _apt "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" || true
fi

# Only keep suites of the running release (e.g. bookworm, bookworm-updates,
# bookworm-security): third-party repos (nodesource, cloud-sdk, ...) rarely
# publish Sources indexes and would only produce update errors.
codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
[[ -n "$codename" ]] || die "cannot determine the Debian codename from /etc/os-release"

# One-line-style files: "deb [opts] URI SUITE COMPONENTS..." -> deb-src.
derive_list() {
    awk -v codename="$codename" '
        /^[[:space:]]*deb[[:space:]]/ {
            line = $0
            sub(/^[[:space:]]*deb[[:space:]]+/, "", line)
            opts = ""
            if (line ~ /^\[/) {
                opts = substr(line, 1, index(line, "]"))
                line = substr(line, index(line, "]") + 1)
                sub(/^[[:space:]]+/, "", line)
            }
            n = split(line, f, /[[:space:]]+/)
            suite = f[2]
            if (suite != codename && index(suite, codename "-") != 1) next
            out = "deb-src"
            if (opts != "") out = out " " opts
            for (i = 1; i <= n; i++) out = out " " f[i]
            print out
        }' "$1"
}

# deb822 files: keep stanzas that are enabled and of type deb, rewrite
# Types to deb-src and drop suites of other releases. Continuation lines
# (e.g. an inline Signed-By key) stay attached to their field.
derive_sources() {
    awk -v codename="$codename" '
        function flush(   i, suites, n, kept, s, out) {
            if (nf == 0) return
            if (enabled == "no" || types !~ /(^|[[:space:]])deb([[:space:]]|$)/) { reset(); return }
            n = split(suitesval, s, /[[:space:]]+/)
            kept = ""
            for (i = 1; i <= n; i++)
                if (s[i] == codename || index(s[i], codename "-") == 1) kept = kept " " s[i]
            if (kept == "") { reset(); return }
            for (i = 1; i <= nf; i++) {
                if (tolower(fname[i]) == "types") print "Types: deb-src"
                else if (tolower(fname[i]) == "suites") print "Suites:" kept
                else printf "%s", fbody[i]
            }
            print ""
            reset()
        }
        function reset() { nf = 0; types = ""; suitesval = ""; enabled = "yes" }
        BEGIN { reset() }
        /^#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        /^[[:space:]]/ { if (nf) fbody[nf] = fbody[nf] $0 "\n"; next }
        {
            name = $0; sub(/:.*/, "", name)
            val = $0; sub(/^[^:]*:[[:space:]]*/, "", val)
            nf++; fname[nf] = name; fbody[nf] = $0 "\n"
            lname = tolower(name)
            if (lname == "types") types = val
            else if (lname == "suites") suitesval = val
            else if (lname == "enabled") enabled = tolower(val)
        }
        END { flush() }' "$1"
}

if [[ -f /etc/apt/sources.list ]]; then
    derive_list /etc/apt/sources.list >>"$APT_DIR/sources.list"
fi
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.list; do
    derive_list "$f" >"$APT_DIR/sources.list.d/$(basename "$f")"
done
for f in /etc/apt/sources.list.d/*.sources; do
    derive_sources "$f" >"$APT_DIR/sources.list.d/$(basename "$f")"
done
shopt -u nullglob
if ! grep -rqsE '^(deb-src|Types: deb-src)' "$APT_DIR/sources.list" "$APT_DIR/sources.list.d"; then
    die "could not derive any deb-src entry for '$codename' from /etc/apt/sources.list{,.d}"
fi
log "derived deb-src entries:"
cat "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/* | sed 's/^/    /' >&2

APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Debug::NoLocking=1"
)

log "apt-get update (private config)"
# A partial failure (one unreachable entry) is tolerated; apt-get source
# below fails clearly if the package really cannot be found.
apt-get "${APT_OPTS[@]}" -q update >&2 || log "warning: apt-get update reported errors, continuing"

# ---------------------------------------------------------------------------
# Fetch and unpack the source. dpkg-source -x also applies debian/patches;
# Debian's patches only touch packaging-related bits and build fine.
# ---------------------------------------------------------------------------
SRC_PARENT="$WORK/src"
mkdir -p "$SRC_PARENT"
# apt downloads as _apt into the current directory.
id _apt >/dev/null 2>&1 && chown _apt "$SRC_PARENT"
log "apt-get source kubernetes"
(cd "$SRC_PARENT" && apt-get "${APT_OPTS[@]}" -q source kubernetes >&2)
SRC=$(find "$SRC_PARENT" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
[[ -n "$SRC" && -f "$SRC/Makefile" ]] || die "unpacked source tree not found under $SRC_PARENT"
[[ -d "$SRC/vendor" ]] || die "$SRC has no vendor/ directory; cannot build offline"

deb_version=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
log "Debian source version $deb_version in $SRC"
case "$deb_version" in
    *1.20.2*) ;;
    *) die "expected a 1.20.2 upstream tree, got Debian version $deb_version" ;;
esac

# ---------------------------------------------------------------------------
# Go 1.18+ fix: v1.20.2 vendors github.com/modern-go/reflect2 v1.0.1, which
# links against the pre-1.18 signature of reflect.mapiterinit. It compiles
# fine with Go 1.19 but the apiserver then dies with "fatal error: fault /
# unexpected fault address" (SIGSEGV in aeshashbody via
# json-iterator's sortKeysMapEncoder) on the first JSON encoding of a map,
# e.g. a pod status patch. reflect2 v1.0.2 is the upstream fix (its API is
# unchanged, json-iterator v1.1.10 builds against it as is), so swap in
# Debian's golang-github-modern-go-reflect2 1.0.2 source package.
# ---------------------------------------------------------------------------
REFLECT2_PARENT="$WORK/reflect2"
mkdir -p "$REFLECT2_PARENT"
id _apt >/dev/null 2>&1 && chown _apt "$REFLECT2_PARENT"
log "apt-get source golang-github-modern-go-reflect2 (Go 1.18+ runtime fix)"
(cd "$REFLECT2_PARENT" && apt-get "${APT_OPTS[@]}" -q source golang-github-modern-go-reflect2 >&2)
R2_SRC=$(find "$REFLECT2_PARENT" -mindepth 1 -maxdepth 1 -type d -name 'golang-github-modern-go-reflect2-*' | head -1)
[[ -n "$R2_SRC" && -f "$R2_SRC/go_above_118.go" ]] \
    || die "reflect2 source without go_above_118.go (need >= 1.0.2) in $REFLECT2_PARENT"
R2_VENDOR="$SRC/vendor/github.com/modern-go/reflect2"
rm -rf "$R2_VENDOR"
mkdir -p "$R2_VENDOR"
# Only the package itself: no tests, no debian/ packaging.
find "$R2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) \
    ! -name '*_test.go' -exec cp -t "$R2_VENDOR" {} +
log "vendored reflect2 replaced by $(basename "$R2_SRC")"

# ---------------------------------------------------------------------------
# Go 1.16+ fix: the OpenAPI schema validator's typeValidator.Validate decides
# "this value is null" with
#     data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))
# i.e. it compares the two reflect.Value headers (type, data pointer, flags),
# not the values. Before Go 1.16 reflect.Zero allocated fresh memory, so the
# comparison was only true for typed nils of pointer-shaped kinds (nil map,
# nil pointer). Since Go 1.16 reflect.Zero points small types at the shared
# runtime.zeroVal, and so does the interface holding a JSON-decoded "" (Go's
# convTstring), so "" now counts as null: any CRD with `default: ""` is
# rejected (prometheus-operator >= v0.75: `...default: Invalid value: "null":
# in body must be of type string: "null"`), and so is any custom resource
# with an empty-string field (ServiceMonitor `jobLabel: ""`, Calico
# `selector: ""`). Numbers and booleans happen to escape (the runtime boxes
# 0/false via staticuint64s, not zeroVal), which is why only "" shows it.
#
# Two vendored copies carry that line: kube-openapi's fork (what
# apiextensions-apiserver validates CRDs and custom resources with in 1.20)
# and github.com/go-openapi/validate v0.19.5 (generic OpenAPI use); both are
# fixed. Choice: `data == nil || palisadeIsTypedNil(data)`, where the helper
# is true only for a nil pointer, map, slice or interface. That keeps the
# typed-nil detection (a Go-built nil map/slice/pointer marshals to JSON null,
# so calling it null is right) and never calls a string, number or bool zero
# value null. JSON-decoded data has no typed nils at all (JSON null decodes
# to an untyped nil), so for everything the apiserver validates this equals
# upstream's own fix, kube-openapi PR #230 (in Kubernetes >= 1.21), which
# reduced the condition to plain `data == nil`; keeping the typed-nil branch
# just avoids relying on that argument for Go-constructed values.
#
# The edit is an exact-line replacement that dies when the expected line is
# missing or appears more than once (a changed source must be looked at, not
# silently built), is a no-op on an already patched file, and afterwards
# checks that no copy of the old condition is left anywhere in the tree.
# ---------------------------------------------------------------------------
readonly NULLCHECK_OLD='if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {'
readonly NULLCHECK_NEW='if data == nil || palisadeIsTypedNil(data) { // patched by palisade integration/apiserver/build.sh'
fix_null_check() {
    local dir="$SRC/vendor/$1" file n
    file="$dir/type.go"
    [[ -f "$file" ]] || die "null-check fix: $file not found (vendored tree changed?)"
    grep -q '^package validate$' "$file" || die "null-check fix: $file is not package validate"
    if grep -qF "$NULLCHECK_NEW" "$file"; then
        log "null-check fix: $1 already patched"
    else
        n=$(grep -cF "$NULLCHECK_OLD" "$file" || true)
        [[ "$n" == 1 ]] || die "null-check fix: expected exactly 1 line '$NULLCHECK_OLD' in $file, found $n (source changed? re-check the fix)"
        # Literal match: escape the BRE metacharacters of the old line.
        local old_re
        old_re=$(printf '%s' "$NULLCHECK_OLD" | sed 's/[][\\.*^$/]/\\&/g')
        sed -i "s/$old_re/$(printf '%s' "$NULLCHECK_NEW" | sed 's/[\\/&]/\\&/g')/" "$file"
        grep -qF "$NULLCHECK_NEW" "$file" && ! grep -qF "$NULLCHECK_OLD" "$file" \
            || die "null-check fix: sed did not rewrite $file"
        log "null-check fix applied to vendor/$1"
    fi
    # The helper lives in its own file (rewritten each time: idempotent).
    cat >"$dir/zz_palisade_typed_nil.go" <<'EOF'
package validate

// Added by Palisade's integration/apiserver/build.sh. typeValidator.Validate
// used reflect.DeepEqual on two reflect.Value headers as its null check,
// which since Go 1.16 (shared reflect.Zero memory) is also true for the empty
// string "". Only a nil pointer, map, slice or interface is null here; a
// string, number or bool (zero or not) never is.

import "reflect"

func palisadeIsTypedNil(data interface{}) bool {
	v := reflect.ValueOf(data)
	switch v.Kind() {
	case reflect.Ptr, reflect.Map, reflect.Slice, reflect.Interface:
		return v.IsNil()
	}
	return false
}
EOF
}
fix_null_check k8s.io/kube-openapi/pkg/validation/validate
fix_null_check github.com/go-openapi/validate
# Any other copy (a newer tree vendoring a third one) must be noticed.
if leftover=$(grep -rlF "$NULLCHECK_OLD" "$SRC/vendor" "$SRC/staging" 2>/dev/null); then
    die "null-check fix: unpatched copies of the old condition remain: $leftover"
fi

# ---------------------------------------------------------------------------
# Build with upstream's make.
# ---------------------------------------------------------------------------
# Upstream's hack/lib/golang.sh creates the GOPATH layout itself
# (_output/local/go/src/k8s.io/kubernetes -> tree), so no manual GOPATH setup.
# Without a .git directory hack/lib/version.sh cannot compute a version and
# the binary would report v0.0.0-master; helm and kubectl read this, so feed
# upstream's version variables explicitly via KUBE_GIT_VERSION_FILE.
cat >"$WORK/version.env" <<EOF
KUBE_GIT_COMMIT='$K8S_GIT_COMMIT'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='$K8S_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF

export PATH="$GO_BIN:$PATH"
# GOFLAGS stays empty: -mod=vendor is a modules-mode flag, and GOPATH mode
# (GO111MODULE=off, what upstream's hack/ scripts use for 1.20) resolves
# imports from vendor/ by itself. GOPROXY=off: nothing may be downloaded.
export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0
export GOCACHE="$WORK/gocache"
export KUBE_GIT_VERSION_FILE="$WORK/version.env"
# Reproducible timestamps instead of "now".
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(stat -c %Y "$SRC/debian/changelog")}"
# Let hack/lib/golang.sh own GOPATH; a caller's GOROOT could point at a
# different Go than the one on PATH.
unset GOROOT GOPATH GOBIN

log "building cmd/kube-apiserver with $(go version) (takes 6-11 min on 2 cores)"
build_start=$(date +%s)
make -C "$SRC" WHAT=cmd/kube-apiserver >&2
log "make finished in $(( $(date +%s) - build_start ))s"

built=$(find "$SRC/_output" -path '*/bin/kube-apiserver' -type f | head -1)
[[ -n "$built" && -x "$built" ]] || die "make succeeded but no kube-apiserver binary found under $SRC/_output"
"$built" --version >&2

# Atomic install: copy next to the target, then rename, so concurrent callers
# never see a partial binary.
tmp_bin=$(mktemp "$CACHE_DIR/.kube-apiserver.XXXXXX")
cp "$built" "$tmp_bin"
chmod 755 "$tmp_bin"
mv -f "$tmp_bin" "$BINARY"

log "installed $BINARY in $(( $(date +%s) - start_ts ))s total"
printf '%s\n' "$BINARY"
