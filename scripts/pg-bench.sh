#!/usr/bin/env bash
# Several nodes on PostgreSQL against one SQLite node, in the same run: durable
# tokenize and audited detokenize over HTTP (`panvault bench`, 64 keep-alive mTLS
# connections), each store preloaded with RECORDS cards.
#
#   scripts/pg-bench.sh [RECORDS=1000000] [SECONDS=10] [NODES=2]
#
# SQLite: `panvault quickstart` in a scratch directory, one node.
# PostgreSQL: a scratch cluster (`initdb`, fsync and synchronous_commit on, run as
# the `postgres` user when this runs as root), `panvault quickstart --postgres URL`
# as the first node, `panvault serve --listen …` for the others on the same
# configuration; the 64 connections are spread over the nodes round robin.
# Prints each `panvault bench` report and a summary line per engine. Builds the
# release binary first. Everything lives under a temporary directory, removed at the
# end (PANVAULT_BENCH_KEEP=1 keeps it).
set -euo pipefail

records=${1:-1000000}
secs=${2:-10}
nodes=${3:-2}
conns=${CONNECTIONS:-64}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pg-bench.XXXXXX)
chmod 0755 "$work"
pids=()
pg_bin=""
pg_data="$work/pgdata"
as_pg=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$pg_bin" ] && [ -d "$pg_data" ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
    fi
    [ "${PANVAULT_BENCH_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && cargo build --quiet --release -p panvault-cli --bin panvault)
pv="$repo/target/release/panvault"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits for the ready line of serve or quickstart in log $1 of process $2.
wait_serving() {
    for _ in $(seq 1 6000); do
        grep -qE "panvault: serving|quickstart: ready at" "$1" && return 0
        kill -0 "$2" 2>/dev/null || { cat "$1" >&2; exit 1; }
        sleep 0.1
    done
    echo "server not ready after 600 s" >&2
    exit 1
}

# bench DIR OP ADDR... : one `panvault bench` run, its report on stdout.
bench() {
    local dir=$1 op=$2; shift 2
    local client=storefront addrs=()
    [ "$op" = detokenize ] && client=payments
    for a in "$@"; do addrs+=(--addr "$a"); done
    local extra=()
    [ "$op" = detokenize ] && extra=(--tokens-file "$dir/tokens.txt" --preload-client storefront)
    "$pv" bench --config "$dir/panvault.toml" --client "$client" --op "$op" \
        --connections "$conns" --duration "${secs}s" --threads 1 "${addrs[@]}" "${extra[@]}"
}

# preload DIR BATCH ADDR...: RECORDS cards through the batch endpoint, BATCH a request.
preload() {
    local dir=$1 batch=$2; shift 2
    local addrs=()
    for a in "$@"; do addrs+=(--addr "$a"); done
    "$pv" bench --config "$dir/panvault.toml" --client storefront --op tokenize \
        --connections "$conns" --preload "$records" --preload-batch "$batch" --duration 0s \
        --tokens-file "$dir/tokens.txt" "${addrs[@]}" >/dev/null
}

# rate OP: "N req/s, p99 M ms" from a bench report on stdin.
rate() { grep -E "^$1 " | head -n 1 | sed -E 's/.* ([0-9]+) req\/s .* p99 +([0-9.]+) ms.*/\1 req\/s, p99 \2 ms/'; }

# ---- SQLite, one node
lite="$work/sqlite"
port=$(free_port)
"$pv" quickstart --data-dir "$lite" --listen "127.0.0.1:$port" >"$work/sqlite.log" 2>&1 &
pids+=($!)
wait_serving "$work/sqlite.log" "${pids[-1]}"
echo "SQLite: preloading $records records"
preload "$lite" 1000 "127.0.0.1:$port"
lite_tok=$(bench "$lite" tokenize "127.0.0.1:$port" | tee /dev/stderr)
lite_det=$(bench "$lite" detokenize "127.0.0.1:$port" | tee /dev/stderr)
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# ---- PostgreSQL, NODES nodes
pg_bin=${PANVAULT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$pg_bin/initdb" ] || { echo "no initdb (install the postgresql package)" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
fi
mkdir -p "$pg_data"
[ "$(id -u)" = 0 ] && chown postgres "$pg_data"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_data" -U panvault --auth=trust >/dev/null
pg_port=$(free_port)
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w \
    -o "-p $pg_port -k $pg_data -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=512MB -c fsync=on -c synchronous_commit=on" \
    start >/dev/null
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U panvault vault
url="postgres://panvault@127.0.0.1:$pg_port/vault?sslmode=disable"

pg="$work/postgres"
addrs=()
port=$(free_port)
"$pv" quickstart --data-dir "$pg" --listen "127.0.0.1:$port" --postgres "$url" >"$work/pg-1.log" 2>&1 &
pids+=($!)
wait_serving "$work/pg-1.log" "${pids[-1]}"
addrs+=("127.0.0.1:$port")
for n in $(seq 2 "$nodes"); do
    port=$(free_port)
    "$pv" serve --config "$pg/panvault.toml" --listen "127.0.0.1:$port" \
        --passphrase-file "$pg/dev-passphrase" --allow-noncompliant >"$work/pg-$n.log" 2>&1 &
    pids+=($!)
    wait_serving "$work/pg-$n.log" "${pids[-1]}"
    addrs+=("127.0.0.1:$port")
done
echo "PostgreSQL ($nodes nodes): preloading $records records"
preload "$pg" 1000 "${addrs[@]}"
pg_tok=$(bench "$pg" tokenize "${addrs[@]}" | tee /dev/stderr)
pg_det=$(bench "$pg" detokenize "${addrs[@]}" | tee /dev/stderr)

echo
echo "summary ($records records, $conns connections, ${secs}s each)"
echo "  SQLite, 1 node:          tokenize $(echo "$lite_tok" | rate tokenize)  detokenize $(echo "$lite_det" | rate detokenize)"
echo "  PostgreSQL, $nodes nodes:   tokenize $(echo "$pg_tok" | rate tokenize)  detokenize $(echo "$pg_det" | rate detokenize)"
