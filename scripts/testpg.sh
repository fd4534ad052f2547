#!/bin/sh
# testpg.sh: a throwaway PostgreSQL 15 cluster for the tests.
#
#   scripts/testpg.sh run CMD...   start a cluster, run CMD with
#                                  OPENTRACK_TEST_POSTGRES set to its DSN,
#                                  then stop and remove the cluster (when
#                                  OPENTRACK_TEST_POSTGRES is set already,
#                                  just run CMD against that server)
#   scripts/testpg.sh start DIR    start a cluster in DIR (empty or new) and
#                                  print its DSN; stop it with "stop DIR"
#   scripts/testpg.sh stop DIR
#
# It installs postgresql-15 from Debian's packages when initdb is missing
# (that needs root). PostgreSQL refuses to run as root, so the cluster runs
# as the postgres user (or as the caller, when not root). It listens on
# 127.0.0.1 on a free port, with its unix socket in DIR, fsync on.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

install_pg() {
	[ -x "$PGBIN/initdb" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "testpg: $PGBIN/initdb missing; install postgresql-15 (as root: apt-get install -y postgresql-15)" >&2
		exit 1
	fi
	echo "testpg: installing postgresql-15" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
}

# as runs a command as the cluster's owner.
as() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + $$ % 20000))
}

start() {
	dir=$1
	install_pg
	mkdir -p "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
	as "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	port=$(free_port)
	as "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
		-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on -c synchronous_commit=on -c max_connections=200 -c shared_buffers=64MB" >/dev/null ||
		{ cat "$dir/server.log" >&2; exit 1; }
	as "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U postgres opentrack_test
	echo "postgres://postgres@127.0.0.1:$port/opentrack_test?sslmode=disable"
}

stop() {
	dir=$1
	if [ -f "$dir/data/postmaster.pid" ]; then
		as "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
	fi
	rm -rf "$dir"
}

case "${1:-}" in
start) start "$2" ;;
stop) stop "$2" ;;
run)
	shift
	if [ -n "${OPENTRACK_TEST_POSTGRES:-}" ]; then
		exec "$@" # a server is given
	fi
	dir=$(mktemp -d /tmp/opentrack-pg.XXXXXX)
	trap 'stop "$dir"' EXIT INT TERM
	dsn=$(start "$dir")
	echo "testpg: PostgreSQL 15 at $dsn" >&2
	OPENTRACK_TEST_POSTGRES=$dsn "$@"
	;;
*)
	echo "usage: $0 run CMD... | start DIR | stop DIR" >&2
	exit 2
	;;
esac
