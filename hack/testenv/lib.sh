# Shared helpers for the test-environment scripts. Source, don't run.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT_DIR="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=../versions.env
source "$HACK_DIR/versions.env"
MPAAS_CACHE="${MPAAS_CACHE:-$HOME/.cache/mpaas-testenv}"
# Runtime state (data dirs, logs, pid files) of a running environment.
MPAAS_RUN="${MPAAS_RUN:-$ROOT_DIR/.testenv}"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--mod=mod}"
mkdir -p "$MPAAS_CACHE" "$MPAAS_RUN"

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { printf '[testenv] ERROR: %s\n' "$*" >&2; exit 1; }
