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

# maven_fetch OUT_DIR NAME DEPENDENCY_XML...: resolve jars from Maven Central into OUT_DIR/libs
# through a throwaway pom (Maven Central is reachable where tarball downloads are not).
maven_fetch() {
  local out=$1 name=$2; shift 2
  local work; work="$(mktemp -d)"
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo "<groupId>io.mpaas.testenv</groupId><artifactId>$name</artifactId><version>1</version><dependencies>"
    printf '%s\n' "$@"
    echo '</dependencies></project>'
  } > "$work/pom.xml"
  mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$out/libs" -DincludeScope=runtime
  local rc=$?
  rm -rf "$work"
  return $rc
}

# mvn_dep GROUP ARTIFACT VERSION: one <dependency> for maven_fetch.
mvn_dep() { echo "<dependency><groupId>$1</groupId><artifactId>$2</artifactId><version>$3</version></dependency>"; }
