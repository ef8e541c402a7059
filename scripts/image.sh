#!/usr/bin/env bash
# `make image`: build $IMAGE (curate:cpu) from the Dockerfile, with `docker build` where a Docker
# engine answers, else with Debian's buildah (daemonless: --isolation chroot, vfs storage), which is
# apt-installed when this runs as root and it is missing. When $BASE cannot be pulled (no registry
# reachable), the base is Debian bookworm made by debootstrap (--variant=minbase, python3,
# python3-venv, ca-certificates) and imported as $LOCAL_BASE, kept for the next build.
# Inputs (environment or make variables):
#   IMAGE         tag to build (default curate:cpu; buildah stores it as localhost/curate:cpu)
#   BASE          base image (default docker.io/library/python:3.11-slim)
#   TORCH_WHEELS  folder or find-links URL with torch-2.13.0+cpu-cp311-*.whl; default: the wheel this
#                 machine's pip finds (pip download through its own config: find-links, index)
#   TORCH_INDEX   torch index tried inside the build when no wheel is given (default the CPU index)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL   a PyPI mirror / private index for the build
#   CA_BUNDLE     CA bundle for a TLS-intercepting proxy, passed as the build secret `ca` (never in a
#                 layer); default PIP_CERT, pip's configured cert, REQUESTS_CA_BUNDLE, SSL_CERT_FILE;
#                 CA_BUNDLE=none passes none
#   ENGINE        docker or buildah (default: docker if `docker info` answers, else buildah)
#   VERBOSE=1     stream the whole build log (default: the STEP lines; the log is build/image-build.log)
# Errors are one line: what failed, where, what to do.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/image_common.sh
. scripts/image_common.sh

main() {  # one function: bash reads it whole, so editing this file during a build is harmless
  t0=$(date +%s)
  write_env() {  # what make image-test reads
    printf 'ENGINE=%s\nIMAGE=%s\nBASE=%s\nSTORAGE_DRIVER=%s\nBUILD_SECONDS=%s\nIMAGE_BYTES=%s\nBUILD_KEY=%s\nTORCH=%s\nCA_BUNDLE=%s\n' \
      "$ENGINE" "$(image_ref "$IMAGE")" "$BASE" "$STORAGE_DRIVER" "$secs" "$(image_size "$IMAGE")" "$key" "$TORCH_VERSION+$TORCH_VARIANT" "$CA_BUNDLE" > build/image.env
  }
  gb() { awk -v b="$1" 'BEGIN {printf "%.2f GB", b / 1e9}'; }
  check_engine           # the inputs first: a wrong one stops the build before anything is installed
  resolve_ca
  resolve_torch_wheels
  pick_engine
  ensure_buildah
  resolve_base
  mkdir -p build

  args=(--build-arg "BASE=$BASE" --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "TORCH_VARIANT=$TORCH_VARIANT")
  [ -n "${TORCH_INDEX:-}" ] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
  [ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  [ -n "${PIP_EXTRA_INDEX_URL:-}" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
  case "$TORCH_WHEELS" in
    "") ;;
    *://*) args+=(--build-arg "TORCH_WHEELS=$TORCH_WHEELS") ;;
    *) args+=(--build-context "torch-wheels=$(cd "$TORCH_WHEELS" && pwd)" --build-arg "TORCH_WHEELS=/tmp/torch-wheels") ;;
  esac
  [ -n "$CA_BUNDLE" ] && args+=(--secret "id=ca,src=$CA_BUNDLE")

  # The build's key: every file of the context (git's view: tracked and untracked, not ignored), the
  # build arguments and the base image. An image with the same key is not built again (FORCE=1 does).
  # Outside a git work tree there is no file list: the key is new each time and the image is built.
  nogit=""; git rev-parse --is-inside-work-tree >/dev/null 2>&1 || nogit="no-git-$(date +%s%N)"
  key=$( { printf '%s\n' "${args[@]}" "base=$(image_id "$BASE")" "$nogit"; git ls-files -z -co --exclude-standard 2>/dev/null \
          | python3 -c 'import hashlib, os, sys
h = hashlib.sha256()
for p in sorted(set(sys.stdin.read().split("\0")) - {""}):
    if os.path.isfile(p):
        h.update(p.encode() + b"\0" + open(p, "rb").read())
print(h.hexdigest())'; } | sha256sum | cut -c1-16)
  if [ "${FORCE:-0}" != 1 ] && have_image "$IMAGE" && [ "$(image_label "$IMAGE" curate.build-key)" = "$key" ]; then
    secs=$(( $(date +%s) - t0 ))
    write_env
    echo "make image: $(image_ref "$IMAGE") is up to date (build key $key: same files, arguments and base; FORCE=1 rebuilds); checked in $secs s; size $(gb "$(image_size "$IMAGE")")"
    exit 0
  fi
  args+=(--label "curate.build-key=$key")

  log=build/image-build.log
  check_space build
  echo "make image: building $IMAGE with $ENGINE from $BASE (torch $TORCH_VERSION+$TORCH_VARIANT from ${TORCH_WHEELS:-${TORCH_INDEX:-https://download.pytorch.org/whl/$TORCH_VARIANT}}${CA_BUNDLE:+, CA bundle $CA_BUNDLE as a build secret}); log: $log"
  if [ "$ENGINE" = docker ]; then
    cmd=(env DOCKER_BUILDKIT=1 docker build "${args[@]}" -t "$IMAGE" .)
  else
    # no --layers: with vfs every cached step is a full copy of the tree (tens of GB); the build key
    # above is the cache
    cmd=(bah bud --format docker --isolation chroot "${args[@]}" -t "$IMAGE" .)
  fi
  stamp() {  # seconds since the build started, before each line of the log
    local l s0=$SECONDS
    while IFS= read -r l; do printf '%4d %s\n' $((SECONDS - s0)) "$l"; done
  }
  before=""
  [ "$ENGINE" = buildah ] && before=$(bah containers -a -q --notruncate 2>/dev/null | sort)
  set +e
  if [ "${VERBOSE:-0}" = 1 ]; then
    "${cmd[@]}" 2>&1 | stamp | tee "$log"
  else
    "${cmd[@]}" 2>&1 | stamp | tee "$log" | grep --line-buffered -E '^ *[0-9]+ (\[[0-9/]+\] )?STEP |^ *[0-9]+ #[0-9]+ \[|^ *[0-9]+ (#[0-9]+ [0-9.]+ )?(install\.sh|Dockerfile): error' | sed -u 's/^\(.\{160\}\).*/\1/'
  fi
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$ENGINE" = buildah ]; then  # buildah 1.28 leaves a working container of the scratch stage behind
    for c in $(comm -13 <(printf '%s\n' "$before") <(bah containers -a -q --notruncate 2>/dev/null | sort)); do
      bah rm "$c" >/dev/null 2>&1 || true
    done
  fi
  if [ "$rc" != 0 ]; then
    # the cause: a one-line error of ours if the build printed one, else the last error the build printed
    cause=$(grep -m1 -E '^ *[0-9]+ (#[0-9]+ [0-9.]+ )?(install\.sh|Dockerfile): error' "$log" | sed -E 's/^ *[0-9]+ (#[0-9]+ [0-9.]+ )?//' || true)
    [ -n "$cause" ] || cause=$(grep -E '^ *[0-9]+ (#[0-9]+ [0-9.]+ )?([A-Za-z]*Error|E): ' "$log" | grep -v 'building at STEP' | tail -1 | sed -E 's/^ *[0-9]+ (#[0-9]+ [0-9.]+ )?//' | cut -c1-300 || true)
    die "the build of $IMAGE failed (exit $rc): ${cause:-see $log}; full log: $log"
  fi
  [ "$ENGINE" = buildah ] && bah rmi --prune >/dev/null 2>&1 || true   # the builder stage, a replaced curate:cpu
  secs=$(( $(date +%s) - t0 ))
  write_env
  echo "make image: built $(image_ref "$IMAGE") in $((secs / 60)) min $((secs % 60)) s with $ENGINE ($STORAGE_DRIVER storage); size $(gb "$(image_size "$IMAGE")") (uncompressed); base $BASE"
}
main "$@"
