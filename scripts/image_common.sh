# Shared by scripts/image.sh (make image) and scripts/image_clean.sh: settings and the steps that pick
# the engine, the base, the torch wheels and the CA bundle. Sourced, not run.
IMAGE=${IMAGE:-curate:cpu}
BASE=${BASE:-docker.io/library/python:3.11-slim}
LOCAL_BASE=${LOCAL_BASE:-localhost/curate-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
TORCH_PYTHON=${TORCH_PYTHON:-3.11}   # the Python of both bases (python:3.11-slim, Debian bookworm)
TORCH_WHEELS=${TORCH_WHEELS:-}
CA_BUNDLE=${CA_BUNDLE:-}
ENGINE=${ENGINE:-}
STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
MIN_FREE_GB=${MIN_FREE_GB:-12}       # vfs keeps a full copy of the tree per layer: a build peaks near 10 GB
WHO=${WHO:-make image}

die() { echo "$WHO: error: $*" >&2; exit 1; }
note() { echo "$WHO: $*" >&2; }
bah() { buildah --storage-driver "$STORAGE_DRIVER" "$@"; }
is_root() { [ "$(id -u)" = 0 ]; }

# apt-get install $1.. as root; one line and exit otherwise.
apt_install() {
  if ! is_root; then
    die "$1 is not installed and installing it needs root: sudo apt-get install -y $*, then run make again"
  fi
  command -v apt-get >/dev/null || die "$1 is not installed and there is no apt-get here: install $* with your package manager"
  note "installing $* (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >/dev/null 2>&1 \
    || die "apt-get install $* failed: run apt-get update && apt-get install $* to see why"
}

check_engine() {
  case "$ENGINE" in
    docker|buildah|"") ;;
    *) die "ENGINE=$ENGINE: use ENGINE=docker or ENGINE=buildah (or leave it empty to pick)" ;;
  esac
}

pick_engine() {
  check_engine
  [ -n "$ENGINE" ] && return
  if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
}

ensure_buildah() {
  [ "$ENGINE" = buildah ] || return 0
  command -v buildah >/dev/null || apt_install buildah
  if ! is_root; then  # rootless buildah needs subordinate ids (/etc/subuid) and newuidmap
    bah info >/dev/null 2>&1 || die "buildah cannot run as $(id -un) here (rootless needs /etc/subuid entries and uidmap); run make image as root or with a Docker engine"
  fi
}

have_image() {
  if [ "$ENGINE" = docker ]; then docker image inspect "$1" >/dev/null 2>&1; else bah inspect --type image "$1" >/dev/null 2>&1; fi
}

image_id() {
  if [ "$ENGINE" = docker ]; then docker image inspect -f '{{.Id}}' "$1"; else bah inspect --type image --format '{{.FromImageID}}' "$1"; fi
}

image_label() {  # image_label IMAGE KEY
  if [ "$ENGINE" = docker ]; then
    docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null
  else
    bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null
  fi
}

image_ref() {  # the name the engine stores: buildah prefixes localhost/ to an unqualified name
  if [ "$ENGINE" = buildah ] && [[ "$1" != */* || "${1%%/*}" != *[.:]* && "${1%%/*}" != localhost ]]; then echo "localhost/$1"; else echo "$1"; fi
}

image_size() {  # bytes, uncompressed
  if [ "$ENGINE" = docker ]; then
    docker image inspect -f '{{.Size}}' "$1"
  else
    # the sum of the image's layers (containers/storage's own records: `buildah images` rounds to MB)
    python3 - "$(bah info --format '{{.store.GraphRoot}}')" "$STORAGE_DRIVER" "$(bah inspect --type image --format '{{.FromImageID}}' "$(image_ref "$1")")" <<'PY'
import json, sys
root, driver, image_id = sys.argv[1:]
top = next(i["layer"] for i in json.load(open(f"{root}/{driver}-images/images.json")) if i["id"] == image_id)
layers = {l["id"]: l for l in json.load(open(f"{root}/{driver}-layers/layers.json"))}
size, lid = 0, top
while lid:
    size += layers[lid].get("diff-size", 0)
    lid = layers[lid].get("parent")
print(size)
PY
  fi
}

check_space() {  # MIN_FREE_GB on the engine's storage and on the build's temporary space
  local dirs=("$1") d free
  [ "$ENGINE" = buildah ] && dirs+=("$(bah info --format '{{.store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers)" "${TMPDIR:-/var/tmp}")
  for d in "${dirs[@]}"; do
    while [ ! -d "$d" ]; do d=$(dirname "$d"); done
    free=$(df -Pk "$d" | awk 'NR==2 {print int($4 / 1048576)}')
    [ "$free" -ge "$MIN_FREE_GB" ] || die "only $free GB free under $d, the build needs about $MIN_FREE_GB GB ($ENGINE, $STORAGE_DRIVER storage): free some space or run make image-clean"
  done
}

# BASE if it is here or can be pulled; else the debootstrap base, made once and kept.
resolve_base() {
  have_image "$BASE" && return 0
  local out
  if [ "$ENGINE" = docker ]; then
    out=$(timeout 300 docker pull -q "$BASE" 2>&1) && return 0
  else
    out=$(timeout 300 buildah --storage-driver "$STORAGE_DRIVER" pull -q "$BASE" 2>&1) && return 0
  fi
  note "$BASE cannot be pulled ($(printf '%s\n' "$out" | grep -v '^$' | tail -1 | cut -c1-160)); the base is $LOCAL_BASE (Debian bookworm, debootstrap)"
  BASE=$LOCAL_BASE
  if have_image "$BASE"; then note "$BASE is already here (make image-clean removes it)"; return 0; fi
  make_local_base
}

make_local_base() {
  is_root || die "$BASE cannot be pulled and building a base with debootstrap needs root: run make image as root, or pass BASE=<an image you can pull>"
  command -v debootstrap >/dev/null || apt_install debootstrap
  local tmp t0
  t0=$(date +%s)
  tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/curate-base.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  note "debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tmp/rootfs" "$DEBIAN_MIRROR" >"$tmp/log" 2>&1 \
    || die "debootstrap of bookworm from $DEBIAN_MIRROR failed ($(grep -m1 -E '^E:' "$tmp/log" || tail -1 "$tmp/log")): check the mirror (DEBIAN_MIRROR=...) or pass BASE=<a pullable image>"
  # no package cache, no device nodes, no host identity in the image
  rm -rf "$tmp"/rootfs/var/cache/apt/archives/*.deb "$tmp"/rootfs/var/lib/apt/lists/* "$tmp/rootfs/etc/hostname" "$tmp/rootfs/etc/resolv.conf"
  find "$tmp/rootfs/dev" -mindepth 1 -delete
  tar --numeric-owner -C "$tmp/rootfs" -cf "$tmp/base.tar" .
  if [ "$ENGINE" = docker ]; then
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$BASE" >/dev/null || die "docker import of the debootstrap base failed"
  else
    local c
    c=$(bah from scratch) && bah add "$c" "$tmp/base.tar" / >/dev/null \
      && bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 --cmd /bin/bash "$c" \
      && bah commit -q --format docker --rm "$c" "$BASE" >/dev/null || die "importing the debootstrap base into buildah failed"
  fi
  rm -rf "$tmp"
  trap - EXIT
  note "made $BASE in $(( $(date +%s) - t0 )) s"
}

# The torch wheel for the build: TORCH_WHEELS as given (checked here), else what this machine's pip
# finds for the image's Python (find-links, indexes, any CA from its config), copied to build/torch-wheels.
resolve_torch_wheels() {
  local want="torch-$TORCH_VERSION+$TORCH_VARIANT-cp${TORCH_PYTHON/./}-"
  case "$TORCH_WHEELS" in
    *://*) return 0 ;;
    "") ;;
    *)
      [ -d "$TORCH_WHEELS" ] || die "TORCH_WHEELS=$TORCH_WHEELS is not a folder: pass a folder holding ${want}*.whl or a find-links URL"
      compgen -G "$TORCH_WHEELS/${want}*.whl" >/dev/null \
        || die "TORCH_WHEELS=$TORCH_WHEELS has no ${want}*.whl (it holds: $(cd "$TORCH_WHEELS" && { ls -- *.whl 2>/dev/null || echo "no wheel"; } | tr '\n' ' ' | sed 's/ $//')): put the CPU wheel there or pass another folder"
      return 0 ;;
  esac
  local dir=build/torch-wheels py out
  if compgen -G "$dir/${want}*.whl" >/dev/null; then TORCH_WHEELS=$dir; return 0; fi
  py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
  mkdir -p "$dir"
  if out=$("$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$TORCH_PYTHON" --implementation cp \
             --platform "manylinux_2_28_$(uname -m)" -d "$dir" "torch==$TORCH_VERSION+$TORCH_VARIANT" 2>&1); then
    TORCH_WHEELS=$dir
    note "torch wheel from this machine's pip: $(cd "$dir" && ls -- ${want}*.whl | head -1)"
  else
    note "no torch==$TORCH_VERSION+$TORCH_VARIANT wheel through this machine's pip ($(printf '%s\n' "$out" | grep -m1 '^ERROR' | cut -c1-120)); the build tries ${TORCH_INDEX:-https://download.pytorch.org/whl/$TORCH_VARIANT}"
  fi
}

resolve_ca() {
  if [ "$CA_BUNDLE" = none ]; then CA_BUNDLE=""; return 0; fi
  if [ -n "$CA_BUNDLE" ]; then
    [ -s "$CA_BUNDLE" ] || die "CA_BUNDLE=$CA_BUNDLE is not a readable file: pass your proxy's CA bundle (PEM) or CA_BUNDLE=none"
    return 0
  fi
  local c py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  for c in "${PIP_CERT:-}" "$("$py" -m pip config get global.cert 2>/dev/null || true)" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
    if [ -n "$c" ] && [ -s "$c" ]; then CA_BUNDLE=$c; return 0; fi
  done
}
