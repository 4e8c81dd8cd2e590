#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1:6379 for the tests: use the one running,
# else start Debian's redis-server (installing it first where we may).
set -euo pipefail

answers() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }

if answers; then
  echo "redis: answering on 127.0.0.1:6379"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  else
    echo "redis: no server on 127.0.0.1:6379 and redis-server is not installed" >&2
    echo "       install it (Debian: apt-get install redis-server) and try again" >&2
    exit 1
  fi
fi
redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no
for _ in $(seq 1 50); do
  answers && { echo "redis: started on 127.0.0.1:6379"; exit 0; }
  sleep 0.1
done
echo "redis: started redis-server but it does not answer on 127.0.0.1:6379" >&2
exit 1
