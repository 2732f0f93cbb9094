#!/usr/bin/env bash
# Builds solgrid's container images with no Docker engine and no registry: the
# binaries in BIN_DIR on a distroless-style runtime layer made from Debian's own
# packages (docker/runtime-packages.lock: glibc, libgcc, CA certificates, as in
# distroless's cc image), with umoci (OCI layout) and skopeo (archives).
# `make images` runs it on the release build; docs/images.md.
#
#   docker/build-images.sh --bin-dir DIR [--out DIR] [--only IMAGE]...
#   docker/build-images.sh --fetch          download the locked .debs into the cache (needs the network)
#   docker/build-images.sh --update-lock    pin the versions apt offers now (after apt-get update)
#   docker/build-images.sh --list           image, binary, entrypoint user, ports — one line each
#
# Output, per image (IMAGE = solgrid-operator, solgrid-scheduler, solgrid-device-plugin,
# verifier, kubectl-solgrid):
#   OUT/oci/IMAGE        an OCI image layout, tagged TAG (skopeo copy oci:OUT/oci/IMAGE:TAG ...)
#   OUT/IMAGE.tar        a docker-archive named REGISTRY/IMAGE:TAG (docker load -i, kind load image-archive)
#   OUT/images.txt       IMAGE REF MANIFEST-DIGEST COMPRESSED-SIZE, one line each
#
# Reproducible: the same binaries and lock give the same digests. Every file has the
# mtime SOURCE_DATE_EPOCH (default: the commit time of HEAD), the config's `created`
# and the history's are that time, entries in a fixed order.
#
# Environment: REGISTRY (ghcr.io/solgrid), TAG (the workspace version = the chart's
# appVersion), SOURCE_DATE_EPOCH, SOLGRID_DEB_CACHE (~/.cache/solgrid/debs),
# DEBIAN_MIRROR (http://deb.debian.org/debian, used when `apt-get download` cannot).
# Needs: umoci, skopeo, jq, dpkg-deb, sha256sum; root for root-owned files (otherwise
# they keep the builder's uid, with a warning).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOCK=$ROOT/docker/runtime-packages.lock
REGISTRY="${REGISTRY:-ghcr.io/solgrid}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}"
CACHE="${SOLGRID_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/solgrid/debs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ARCH="$(dpkg --print-architecture)"
# The chart's non-root user (values.yaml containerSecurityContext, the verification
# pod's runAsUser): distroless's `nonroot`.
NONROOT=65532

# image | binary | exposed ports (the chart's containerPorts) | title
IMAGES=(
  "solgrid-operator|solgrid-operator|8080/tcp|solgrid operator (ComputeJob, GpuNode, StakePosition, settlement)"
  "solgrid-scheduler|solgrid-scheduler|8889/tcp|solgrid scheduler extender"
  "solgrid-device-plugin|solgrid-device-plugin|9402/tcp|solgrid GPU device plugin"
  "verifier|solgrid-operator||solgrid proof-of-work verifier (solgrid-operator verify-worker)"
  "kubectl-solgrid|kubectl-solgrid||kubectl-solgrid, the kubectl plugin"
)

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }

lock_lines() { grep -v '^#' "$LOCK" | awk -v a="$ARCH" 'NF == 5 && ($3 == a || $3 == "all")'; }

# The locked .debs, in the cache, checked against the lock's sha256.
fetch() {
  mkdir -p "$CACHE"
  local pkg ver arch sum path file
  while read -r pkg ver arch sum path; do
    file="$CACHE/$(basename "$path")"
    if [ -f "$file" ] && echo "$sum  $file" | sha256sum -c --status; then continue; fi
    rm -f "$file"
    log "fetching $pkg $ver ($arch)"
    if ! (cd "$CACHE" && apt-get download -qq "$pkg=$ver" >/dev/null 2>&1); then
      if curl -fsSL -o "$file.part" "$MIRROR/$path" 2>/dev/null; then mv "$file.part" "$file"; fi
      rm -f "$file.part"
    fi
    [ -f "$file" ] || die "cannot get $pkg $ver ($arch): not in $CACHE, apt-get download and $MIRROR/$path failed (no network? a newer Debian update replaced it: docker/build-images.sh --update-lock)"
    echo "$sum  $file" | sha256sum -c --status || die "$file: sha256 differs from docker/runtime-packages.lock"
  done < <(lock_lines)
}

update_lock() {
  local tmp pkg
  tmp=$(mktemp)
  sed -n '/^#/p' "$LOCK" >"$tmp"
  grep -v '^#' "$LOCK" | awk -v a="$ARCH" 'NF == 5 && $3 != a && $3 != "all"' >>"$tmp" || true
  for pkg in $(grep -v '^#' "$LOCK" | awk 'NF == 5 { print $1 }' | sort -u); do
    apt-cache show --no-all-versions "$pkg" |
      awk -v p="$pkg" '/^Version:/{v=$2} /^Architecture:/{a=$2} /^SHA256:/{s=$2} /^Filename:/{f=$2}
        END { if (v == "" || s == "" || f == "") exit 1; print p, v, a, s, f }' >>"$tmp" ||
      die "apt-cache knows no $pkg (apt-get update?)"
  done
  mv "$tmp" "$LOCK"
  log "$LOCK:"
  cat "$LOCK" >&2
}

list() {
  local line
  for line in "${IMAGES[@]}"; do
    IFS='|' read -r name bin ports _ <<<"$line"
    echo "$name $bin $NONROOT:$NONROOT ${ports:--} $REGISTRY/$name:$TAG"
  done
}

BIN_DIR=""
OUT="$ROOT/out/images"
ONLY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --only) ONLY+=("$2"); shift 2 ;;
    --fetch) fetch; exit 0 ;;
    --update-lock) update_lock; exit 0 ;;
    --list) list; exit 0 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--help)" ;;
  esac
done
[ -n "$BIN_DIR" ] || die "--bin-dir DIR is required (the directory with the built binaries, e.g. target/release)"
for t in umoci skopeo jq dpkg-deb sha256sum; do
  command -v "$t" >/dev/null || die "needs $t (apt-get install umoci skopeo)"
done
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
export LC_ALL=C TZ=UTC
umask 022

selected() {
  [ ${#ONLY[@]} -eq 0 ] && return 0
  local o
  for o in "${ONLY[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

start=$(date +%s)
fetch
WORK=$(mktemp -d "${TMPDIR:-/tmp}/solgrid-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- the runtime layer: what distroless's cc image has, from the locked .debs ------
BASE=$WORK/base
mkdir -p "$BASE"
declare -A DEB
while read -r pkg _ _ _ path; do
  DEB[$pkg]="$CACHE/$(basename "$path")"
  dpkg-deb -x "${DEB[$pkg]}" "$WORK/x-$pkg"
  # licences and the package record (what image scanners read, as in distroless)
  # (libgcc-s1's doc directory is a link to gcc-12-base's, which is locked for it)
  if [ -f "$WORK/x-$pkg/usr/share/doc/$pkg/copyright" ] && [ ! -L "$WORK/x-$pkg/usr/share/doc/$pkg" ]; then
    install -D -m 0644 "$WORK/x-$pkg/usr/share/doc/$pkg/copyright" "$BASE/usr/share/doc/$pkg/copyright"
  fi
  mkdir -p "$BASE/var/lib/dpkg/status.d"
  dpkg-deb -f "${DEB[$pkg]}" >"$BASE/var/lib/dpkg/status.d/$pkg"
done < <(lock_lines)
for pkg in libc6 libgcc-s1 ca-certificates; do
  [ -n "${DEB[$pkg]:-}" ] || die "docker/runtime-packages.lock has no $pkg for $ARCH (docker/build-images.sh --update-lock on a $ARCH machine)"
done
# the Debian packages of the runtime layer, as a label and in the history
RUNTIME=$(lock_lines | awk '{ printf "%s%s=%s", s, $1, $2; s = " " }')
MULTIARCH=$(find "$WORK/x-libc6/lib" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1)
[ -n "$MULTIARCH" ] || die "libc6 has no lib/<multiarch> directory"
# glibc's shared libraries (the loader, libc, libm, the libdl/libpthread/librt stubs
# NVML needs when dlopen()ed), not its gconv modules, tools or locales; libgcc_s.
mkdir -p "$BASE/lib/$MULTIARCH"
cp -a "$WORK/x-libc6/lib/$MULTIARCH/." "$BASE/lib/$MULTIARCH/"
cp -a "$WORK/x-libgcc-s1/lib/$MULTIARCH/." "$BASE/lib/$MULTIARCH/"
for d in lib64 lib32 libx32; do
  [ -e "$WORK/x-libc6/$d" ] && cp -a "$WORK/x-libc6/$d" "$BASE/"
done
mkdir -p "$BASE/etc/ld.so.conf.d"
cp -a "$WORK/x-libc6/etc/ld.so.conf.d/." "$BASE/etc/ld.so.conf.d/"
# The CA bundle update-ca-certificates would write (the certificates, sorted).
mkdir -p "$BASE/etc/ssl/certs"
find "$WORK/x-ca-certificates/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z |
  xargs -0 cat >"$BASE/etc/ssl/certs/ca-certificates.crt"
[ -s "$BASE/etc/ssl/certs/ca-certificates.crt" ] || die "no CA certificates in ca-certificates"
cat >"$BASE/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$NONROOT:$NONROOT:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$BASE/etc/group" <<EOF
root:x:0:
tty:x:5:
staff:x:50:
nogroup:x:65534:
nonroot:x:$NONROOT:
EOF
cat >"$BASE/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
EOF
cat >"$BASE/etc/os-release" <<'EOF'
PRETTY_NAME="solgrid runtime (Debian GNU/Linux 12 packages)"
NAME="Debian GNU/Linux"
ID=debian
VERSION_ID="12"
VERSION_CODENAME=bookworm
HOME_URL="https://github.com/solgrid/solgrid"
EOF
mkdir -p "$BASE/tmp" "$BASE/root" "$BASE/home/nonroot" "$BASE/usr/local/bin" "$BASE/var/lib"
chmod 1777 "$BASE/tmp"
chmod 0700 "$BASE/root" "$BASE/home/nonroot"
if [ "$(id -u)" = 0 ]; then
  chown -R 0:0 "$BASE"
  chown "$NONROOT:$NONROOT" "$BASE/home/nonroot"
else
  log "warning: not root: files keep uid $(id -u) (build as root for root-owned files)"
fi

stamp() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }
stamp "$BASE"

mkdir -p "$OUT/oci"
: >"$WORK/images.txt"
POLICY=$WORK/policy.json
# Local files this script has just built: nothing to verify a signature of.
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"

for line in "${IMAGES[@]}"; do
  IFS='|' read -r name bin ports title <<<"$line"
  selected "$name" || continue
  [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin: not built (cargo build --release --locked -p $bin)"
  log "$REGISTRY/$name:$TAG ($bin)"
  layer=$WORK/layer-$name
  install -D -m 0755 "$BIN_DIR/$bin" "$layer/usr/local/bin/$bin"
  [ "$(id -u)" = 0 ] && chown -R 0:0 "$layer"
  stamp "$layer"

  layout=$OUT/oci/$name
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$TAG"
  # layer 1: the runtime (the same blob in every image); layer 2: the binary
  hist=(--history.created "$CREATED" --history.author solgrid)
  # (unpack + repack, not insert at /: that would put a "/" entry in the layer)
  umoci unpack --image "$layout:$TAG" "$WORK/bundle-$name" >/dev/null
  cp -a "$BASE/." "$WORK/bundle-$name/rootfs/"
  touch -h -d "@$SOURCE_DATE_EPOCH" "$WORK/bundle-$name/rootfs"
  umoci repack "${hist[@]}" --history.created_by "docker/build-images.sh: runtime from $RUNTIME" \
    --image "$layout:$TAG" "$WORK/bundle-$name"
  rm -rf "$WORK/bundle-$name"
  umoci insert "${hist[@]}" --history.created_by "docker/build-images.sh: /usr/local/bin/$bin" \
    --image "$layout:$TAG" "$layer/usr/local/bin/$bin" "/usr/local/bin/$bin"
  args=(
    --no-history --image "$layout:$TAG"
    --created "$CREATED" --os linux --architecture "$ARCH"
    --config.user "$NONROOT:$NONROOT" --config.workingdir /
    --config.entrypoint "/usr/local/bin/$bin"
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --config.env "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    --config.label "org.opencontainers.image.title=$name"
    --config.label "org.opencontainers.image.description=$title"
    --config.label "org.opencontainers.image.version=$TAG"
    --config.label "org.opencontainers.image.source=https://github.com/solgrid/solgrid"
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
    --config.label "dev.solgrid.runtime.packages=$RUNTIME"
  )
  for p in ${ports//,/ }; do args+=(--config.exposedports "$p"); done
  umoci config "${args[@]}"
  umoci gc --layout "$layout"

  archive=$OUT/$name.tar
  rm -f "$archive"
  skopeo --policy "$POLICY" copy -q "oci:$layout:$TAG" "docker-archive:$archive:$REGISTRY/$name:$TAG"
  digest=$(skopeo inspect --raw "oci:$layout:$TAG" | sha256sum | cut -d' ' -f1)
  size=$(skopeo inspect --raw "oci:$layout:$TAG" | jq '[.config.size] + [.layers[].size] | add')
  echo "$name $REGISTRY/$name:$TAG sha256:$digest $size" >>"$WORK/images.txt"
done
# images.txt lists what this run built (merged with earlier lines of other images)
if [ -f "$OUT/images.txt" ]; then
  awk 'NR == FNR { built[$1] = 1; print; next } !($1 in built)' "$WORK/images.txt" "$OUT/images.txt" |
    sort >"$WORK/merged" && mv "$WORK/merged" "$OUT/images.txt"
else
  sort "$WORK/images.txt" >"$OUT/images.txt"
fi
log "done in $(( $(date +%s) - start ))s (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH):"
sed 's/^/  /' "$OUT/images.txt" >&2
