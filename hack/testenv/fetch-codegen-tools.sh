#!/usr/bin/env bash
# Compilers that check the gateway's generated clients: TypeScript (npm) and Kotlin (Maven Central).
source "$(dirname "$0")/lib.sh"

ts="$MPAAS_CACHE/typescript-$TYPESCRIPT_VERSION"
if [[ ! -x $ts/node_modules/.bin/tsc ]]; then
  log "installing typescript $TYPESCRIPT_VERSION from npm"
  mkdir -p "$ts"
  (cd "$ts" && npm install --silent --no-audit --no-fund "typescript@$TYPESCRIPT_VERSION")
fi

kt="$MPAAS_CACHE/kotlin-$KOTLIN_VERSION"
if [[ ! -f $kt/.complete ]]; then
  log "resolving the Kotlin $KOTLIN_VERSION compiler from Maven Central"
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.mpaas.testenv</groupId><artifactId>kotlin-compiler</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.jetbrains.kotlin</groupId><artifactId>kotlin-compiler-embeddable</artifactId><version>$KOTLIN_VERSION</version></dependency>
  </dependencies>
</project>
POM
  mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$kt/libs" -DincludeScope=runtime
  touch "$kt/.complete"
fi
