#!/usr/bin/env bash
# `./chatmesh test`: prepares the machine, then runs the suite. Starts PostgreSQL, Redis and NATS
# when they are installed but not answering, installs Debian's Chromium when it is missing (as
# root), type-checks, lints, then runs `npm test` with the given arguments. `npm test` alone
# runs only the last step, for machines where everything already runs.
#
# The services are looked for where the tests look (TEST_POSTGRES_URL, TEST_REDIS_URL,
# TEST_NATS_URL; default 127.0.0.1:5432, :6379, :4222), and Redis and NATS are started on those
# ports. Where they write: TEST_ENV_STATE_DIR (default /var/lib) and TEST_ENV_LOG_DIR (default
# /var/log). TEST_ENV_SKIP=chromium,typecheck,lint skips steps.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "test-env: $*" >&2; }
fail() { say "$*"; exit 1; }

# host and port of a URL such as redis://127.0.0.1:6379/0 (the default port when it names none)
host_of() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; echo "${rest%%:*}"; }
port_of() { local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}; [[ $rest == *:* ]] && echo "${rest##*:}" || echo "$2"; }

PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
NATS_URL=${TEST_NATS_URL:-nats://127.0.0.1:4222}
PG_HOST=$(host_of "$PG_URL") PG_PORT=$(port_of "$PG_URL" 5432)
REDIS_HOST=$(host_of "$REDIS_URL") REDIS_PORT=$(port_of "$REDIS_URL" 6379)
NATS_HOST=$(host_of "$NATS_URL") NATS_PORT=$(port_of "$NATS_URL" 4222)
STATE_DIR=${TEST_ENV_STATE_DIR:-/var/lib}
LOG_DIR=${TEST_ENV_LOG_DIR:-/var/log}
SKIP=",${TEST_ENV_SKIP:-},"

pg_up() { pg_isready -h "$PG_HOST" -p "$PG_PORT" -q; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }
nats_up() { (exec 3<>"/dev/tcp/$NATS_HOST/$NATS_PORT") 2>/dev/null; }

wait_for() { # name, check
	local name=$1
	shift
	for _ in $(seq 1 60); do
		if "$@" >/dev/null 2>&1; then
			say "$name is up"
			return 0
		fi
		sleep 0.5
	done
	fail "$name did not come up on its port"
}

# PostgreSQL: the Debian cluster (pg_ctlcluster), whichever version is installed.
if ! pg_up 2>/dev/null; then
	command -v pg_ctlcluster >/dev/null || fail "PostgreSQL is not answering on $PG_HOST:$PG_PORT and is not installed: apt-get install postgresql (trust auth for 127.0.0.1, database test)"
	say "starting PostgreSQL"
	pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
fi
wait_for PostgreSQL pg_up

if ! redis_up; then
	command -v redis-server >/dev/null || fail "Redis is not answering on $REDIS_HOST:$REDIS_PORT and is not installed: apt-get install redis-server"
	say "starting Redis on port $REDIS_PORT"
	mkdir -p "$STATE_DIR/redis" "$LOG_DIR/redis"
	redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
		--dir "$STATE_DIR/redis" --logfile "$LOG_DIR/redis/test-env-$REDIS_PORT.log" || true
fi
wait_for Redis redis_up

if ! nats_up; then
	command -v nats-server >/dev/null || fail "NATS is not answering on $NATS_HOST:$NATS_PORT and is not installed: apt-get install nats-server"
	say "starting NATS on port $NATS_PORT"
	mkdir -p "$STATE_DIR/nats-server" "$LOG_DIR"
	# The pid file names this port's server, so another NATS on the machine does not count as this one.
	start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$STATE_DIR/nats-server-$NATS_PORT.pid" \
		--exec "$(command -v nats-server)" -- \
		-a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$STATE_DIR/nats-server" -l "$LOG_DIR/nats-server-$NATS_PORT.log" || true
fi
wait_for NATS nats_up

# The web app's end-to-end tests drive Debian's Chromium (never a browser download).
if [[ $SKIP != *,chromium,* ]] && [ ! -x /usr/bin/chromium ]; then
	[ "$(id -u)" = 0 ] || fail "Chromium is missing: run 'sudo apt-get install chromium' (the browser tests use /usr/bin/chromium)"
	say "installing Chromium"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The observability test runs Debian's Prometheus (and promtool) against a real cluster.
if [[ $SKIP != *,prometheus,* ]] && { [ ! -x /usr/bin/prometheus ] || ! command -v promtool >/dev/null; }; then
	[ "$(id -u)" = 0 ] || fail "Prometheus is missing: run 'sudo apt-get install prometheus' (the metrics tests use /usr/bin/prometheus and promtool)"
	say "installing Prometheus"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

if [[ $SKIP != *,typecheck,* ]]; then
	say "type-checking"
	npm run --silent typecheck
fi
if [[ $SKIP != *,lint,* ]]; then
	say "linting"
	npm run --silent lint
fi

say "running the tests"
exec npm run --silent test -- "$@"
