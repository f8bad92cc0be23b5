#!/usr/bin/env bash
# Peers' real client SDKs from npm, for the tests that send through them (analytics: PostHog, Countly;
# delivery: CodePush's acquisition SDK), and `ws`, the WebSocket the link TypeScript client is tested with in Node.
source "$(dirname "$0")/lib.sh"

dir="$MPAAS_CACHE/peer-sdks-posthog-$POSTHOG_NODE_VERSION-countly-$COUNTLY_SDK_NODEJS_VERSION"
if [[ ! -f $dir/.complete ]]; then
  log "installing posthog-node $POSTHOG_NODE_VERSION and countly-sdk-nodejs $COUNTLY_SDK_NODEJS_VERSION from npm"
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund \
    "posthog-node@$POSTHOG_NODE_VERSION" "countly-sdk-nodejs@$COUNTLY_SDK_NODEJS_VERSION")
  touch "$dir/.complete"
fi

dir="$MPAAS_CACHE/peer-sdks-code-push-$CODE_PUSH_VERSION"
if [[ ! -f $dir/.complete ]]; then
  log "installing code-push $CODE_PUSH_VERSION from npm"
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund "code-push@$CODE_PUSH_VERSION")
  touch "$dir/.complete"
fi

dir="$MPAAS_CACHE/node-ws-$WS_VERSION"
if [[ ! -f $dir/.complete ]]; then
  log "installing ws $WS_VERSION from npm"
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund "ws@$WS_VERSION")
  touch "$dir/.complete"
fi
