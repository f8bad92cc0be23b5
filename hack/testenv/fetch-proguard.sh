#!/usr/bin/env bash
# ProGuard from Maven Central: the symbolication tests obfuscate a small Java app with it, for a real mapping.
source "$(dirname "$0")/lib.sh"

dir="$MPAAS_CACHE/proguard-$PROGUARD_VERSION"
if [[ ! -f $dir/.complete ]]; then
  log "resolving ProGuard $PROGUARD_VERSION from Maven Central"
  maven_fetch "$dir" proguard "$(mvn_dep com.guardsquare proguard-base "$PROGUARD_VERSION")"
  touch "$dir/.complete"
fi
