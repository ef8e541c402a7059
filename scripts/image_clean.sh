#!/usr/bin/env bash
# `make image-clean`: remove what `make image` / `make image-test` left: the image, the debootstrap
# base, unnamed layers, leftover curate-* working containers, build/ files.
set -euo pipefail
cd "$(dirname "$0")/.."
WHO="make image-clean"
# shellcheck source=scripts/image_common.sh
. scripts/image_common.sh
pick_engine
if [ "$ENGINE" = docker ]; then
  docker image rm -f "$IMAGE" "$LOCAL_BASE" >/dev/null 2>&1 || true
  docker builder prune -f >/dev/null 2>&1 || true
elif command -v buildah >/dev/null; then
  # working containers of image-test runs that were killed (image_test.py names them curate-*)
  for c in $(bah containers --format '{{.ContainerName}}' 2>/dev/null | grep '^curate-' || true); do bah rm "$c" >/dev/null 2>&1 || true; done
  bah rmi -f "$(image_ref "$IMAGE")" "$LOCAL_BASE" >/dev/null 2>&1 || true
  bah rmi --prune >/dev/null 2>&1 || true
fi
rm -rf build/torch-wheels build/image-test build/image.env build/image-build.log
echo "$WHO: removed $IMAGE, $LOCAL_BASE and cached layers ($ENGINE)"
