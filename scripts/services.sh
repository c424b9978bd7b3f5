#!/usr/bin/env bash
# Start the services the tests use, if they are not running: Redis on 127.0.0.1:6379 (no persistence).
# Installs redis-server with apt-get when it is missing and we are root. Never fails the build: when Redis
# cannot be had, it says why and the Redis tests skip (only those).
set -uo pipefail

REDIS_PORT=6379

redis_answers() {
    # PING over bash's /dev/tcp (needs no redis-cli), in a subshell whose errors go nowhere.
    (
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 \
            && [[ "$reply" == "+PONG"* ]]
    ) 2>/dev/null
}

unavailable() {
    echo "services: Redis unavailable ($1); the Redis tests will be skipped" >&2
    exit 0
}

if redis_answers; then
    echo "services: Redis already answering on 127.0.0.1:$REDIS_PORT"
    exit 0
fi

if ! command -v redis-server >/dev/null; then
    [[ "$(id -u)" == 0 ]] || unavailable "redis-server is not installed and installing it needs root"
    command -v apt-get >/dev/null || unavailable "redis-server is not installed and there is no apt-get"
    echo "services: installing redis-server"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >/tmp/keel-services-apt.log 2>&1 \
        || unavailable "apt-get install redis-server failed: see /tmp/keel-services-apt.log"
fi

mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || unavailable "redis-server did not start (see /var/log/redis/ci.log)"

for _ in $(seq 50); do
    if redis_answers; then
        echo "services: Redis started on 127.0.0.1:$REDIS_PORT"
        exit 0
    fi
    sleep 0.1
done
unavailable "redis-server started but does not answer on 127.0.0.1:$REDIS_PORT"
