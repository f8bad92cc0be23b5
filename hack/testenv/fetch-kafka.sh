#!/usr/bin/env bash
# Resolves a Kafka broker's jars from Maven Central into the cache.
source "$(dirname "$0")/lib.sh"
out="$MPAAS_CACHE/kafka-$KAFKA_VERSION"
[[ -f $out/.complete ]] && { log "kafka $KAFKA_VERSION cached"; exit 0; }
log "resolving kafka $KAFKA_VERSION from Maven Central"
# Without an SLF4J binding the broker runs but logs nothing.
maven_fetch "$out" kafka-jars \
  "$(mvn_dep org.apache.kafka kafka_2.13 "$KAFKA_VERSION")" \
  "$(mvn_dep org.apache.kafka kafka-tools "$KAFKA_VERSION")" \
  "$(mvn_dep org.slf4j slf4j-api 1.7.36)" \
  "$(mvn_dep org.apache.logging.log4j log4j-slf4j-impl 2.24.3)" \
  "$(mvn_dep org.apache.logging.log4j log4j-core 2.24.3)"
touch "$out/.complete"
log "kafka jars in $out/libs"
