#!/usr/bin/env bash
# How many publications a second one Redis passes on to N subscribed wsserver processes: the
# backplane's ceiling (README, "How far one Redis goes"). A redis-server of its own on a free
# loopback port, pinned to CPU 1; N `redis-cli subscribe` readers stand in for the processes;
# redis-benchmark (CPU 0) PUBLISHes 200-byte messages, about a wsserver message, on 50
# connections, one at a time and pipelined 16 deep (wsserver does not wait for one PUBLISH before
# the next). Everything it starts is stopped by its PID.
#
#   bench/redis_pubsub.sh [SUBSCRIBERS...]      # default: 0 2 10 50
set -euo pipefail
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis=$!
readers=()
trap 'kill "${readers[@]}" "$redis" 2>/dev/null || true' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
[ $# -gt 0 ] || set -- 0 2 10 50
channel=wsserver:0:realm1
payload=$(printf 'x%.0s' $(seq 200))
for subscribers in "$@"; do
  for subscriber in $(seq 1 "$subscribers"); do
    redis-cli -p "$port" subscribe "$channel" >/dev/null &
    readers+=($!)
  done
  sleep 0.5
  for pipeline in 1 16; do
    rate=$(taskset -c 0 redis-benchmark -p "$port" -n 300000 -c 50 -P "$pipeline" -q PUBLISH "$channel" "$payload" \
      | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
    printf '%3d subscribers, pipeline %2d: %9.0f PUBLISH/s, %9.0f messages out/s\n' \
      "$subscribers" "$pipeline" "$rate" "$(echo "$rate * $subscribers" | bc)"
  done
  kill "${readers[@]}" 2>/dev/null || true
  readers=()
done
