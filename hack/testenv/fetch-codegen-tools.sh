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
  maven_fetch "$kt" kotlin-compiler "$(mvn_dep org.jetbrains.kotlin kotlin-compiler-embeddable "$KOTLIN_VERSION")"
  touch "$kt/.complete"
fi
