#!/usr/bin/env bash
# Start the services the tests use, if they are not running: Redis on 127.0.0.1:6379 (no persistence), then
# PostgreSQL on 127.0.0.1:5432 with a database `test` that user postgres reaches without a password; and make
# sure headless Chromium is there (the HTML report's rendering test).
# Installs each with apt-get when it is missing and we are root. Never fails the build: when one cannot be had,
# it says why and only the tests that need it skip.
set -uo pipefail

REDIS_PORT=6379

main() {
    start_redis
    start_postgres
    have_chromium
}

redis_answers() {
    # PING over bash's /dev/tcp (needs no redis-cli), in a subshell whose errors go nowhere.
    (
        exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 \
            && [[ "$reply" == "+PONG"* ]]
    ) 2>/dev/null
}

# Each start_* function says why it gives up and returns 1; main goes on to the next server either way.
unavailable() {
    echo "services: $1 unavailable ($2); the tests that need $1 will be skipped" >&2
    return 1
}

apt_install() {  # apt_install SERVER PACKAGE: install PACKAGE when we are root and have apt-get
    [[ "$(id -u)" == 0 ]] || { unavailable "$1" "$2 is not installed and installing it needs root"; return 1; }
    command -v apt-get >/dev/null || { unavailable "$1" "$2 is not installed and there is no apt-get"; return 1; }
    echo "services: installing $2"
    # waits for another apt-get holding the lock (parallel builds on one machine) rather than failing at once
    { apt-get update -qq -o DPkg::Lock::Timeout=300 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$2"; } \
        >"/tmp/keel-services-apt-$2.log" 2>&1 \
        || { unavailable "$1" "apt-get install $2 failed: see /tmp/keel-services-apt-$2.log"; return 1; }
}

start_redis() {
    if redis_answers; then
        echo "services: Redis already answering on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    command -v redis-server >/dev/null || apt_install Redis redis-server || return 1
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || { unavailable Redis "redis-server did not start (see /var/log/redis/ci.log)"; return 1; }
    for _ in $(seq 50); do
        if redis_answers; then
            echo "services: Redis started on 127.0.0.1:$REDIS_PORT"
            return 0
        fi
        sleep 0.1
    done
    unavailable Redis "redis-server started but does not answer on 127.0.0.1:$REDIS_PORT"
}

PG_PORT=5432

pg_answers() {  # the test database answers user postgres over TCP, without a password
    command -v psql >/dev/null && psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -w -qtAc 'SELECT 1' >/dev/null 2>&1
}

as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
    if pg_answers; then
        echo "services: PostgreSQL already answering on 127.0.0.1:$PG_PORT (database test)"
        return 0
    fi
    if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
        apt_install PostgreSQL postgresql || return 1
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    [[ -n "$version" ]] || { unavailable PostgreSQL "no cluster under /etc/postgresql"; return 1; }
    if ! pg_lsclusters -h 2>/dev/null | grep -q "^$version main .* online"; then
        [[ "$(id -u)" == 0 ]] || { unavailable PostgreSQL "the server is stopped and starting it needs root"; return 1; }
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/tmp/keel-services-pg.log 2>&1 \
            || { unavailable PostgreSQL "pg_ctlcluster start failed: see /tmp/keel-services-pg.log"; return 1; }
    fi
    if ! pg_answers && [[ "$(id -u)" == 0 ]]; then
        # A fresh install asks for passwords over TCP: let local connections in (this is a test machine), and
        # make the database the tests use.
        local hba=/etc/postgresql/$version/main/pg_hba.conf
        if ! grep -q "keel tests" "$hba"; then
            sed -i '1i host all all 127.0.0.1/32 trust  # keel tests\nhost all all ::1/128 trust  # keel tests' "$hba"
            as_postgres psql -qc 'SELECT pg_reload_conf()' >/dev/null 2>&1
        fi
        as_postgres createdb test >/dev/null 2>&1
    fi
    for _ in $(seq 50); do
        if pg_answers; then
            echo "services: PostgreSQL started on 127.0.0.1:$PG_PORT (database test)"
            return 0
        fi
        sleep 0.1
    done
    unavailable PostgreSQL "the server does not answer as user postgres, database test, on 127.0.0.1:$PG_PORT"
}

have_chromium() {  # tests/test_report_html.py renders the HTML report with `chromium --headless`
    if command -v chromium >/dev/null; then
        echo "services: Chromium installed ($(command -v chromium))"
        return 0
    fi
    apt_install Chromium chromium || return 1
    echo "services: Chromium installed"
}

main
exit 0
