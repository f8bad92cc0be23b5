#!/usr/bin/env bash
# Resolves a Kafka broker's jars from Maven Central into the cache (no tarball
# downloads are reachable from CI machines, Maven Central is).
source "$(dirname "$0")/lib.sh"
out="$MPAAS_CACHE/kafka-$KAFKA_VERSION"
[[ -f $out/.complete ]] && { log "kafka $KAFKA_VERSION cached"; exit 0; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.mpaas.testenv</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
log "resolving kafka $KAFKA_VERSION from Maven Central"
mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies -DoutputDirectory="$out/libs" -DincludeScope=runtime
touch "$out/.complete"
log "kafka jars in $out/libs"
