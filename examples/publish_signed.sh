#!/usr/bin/env bash
# Publish to wsserver's HTTP API with a signed request, using curl and openssl only:
#
#   WSSERVER_KEY_NAME=backend WSSERVER_SECRET=... ./publish_signed.sh http://127.0.0.1:8080 com.example.status '["ok"]'
#
# The signature is HMAC-SHA256(secret, timestamp "\n" nonce "\n" body), in hex; a nonce is good once,
# and the timestamp (unix seconds) must be within 5 minutes of the server's clock.
set -euo pipefail
url=$1 topic=$2 args=${3:-[]}
body=$(printf '{"topic": "%s", "args": %s}' "$topic" "$args")
timestamp=$(date +%s)
nonce=$(openssl rand -hex 16)
signature=$(printf '%s\n%s\n%s' "$timestamp" "$nonce" "$body" \
  | openssl dgst -sha256 -hmac "$WSSERVER_SECRET" -r | cut -d' ' -f1)
curl -sS --fail-with-body "$url/publish" \
  -H "Content-Type: application/json" \
  -H "X-Wsserver-Key: $WSSERVER_KEY_NAME" \
  -H "X-Wsserver-Timestamp: $timestamp" \
  -H "X-Wsserver-Nonce: $nonce" \
  -H "X-Wsserver-Signature: $signature" \
  --data-binary "$body"
echo
