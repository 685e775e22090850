#!/usr/bin/env bash
# Issue 19: esim-notify on PostgreSQL beside sled, in one run, each figure
# next to its baseline:
#   - intake (wrk, bench/intake.lua: a new eSIM and a notice per request)
#     on sled, on PostgreSQL with one instance, then two instances each
#     getting half the connections; baselines: the bare actix handler and
#     pgbench running a one-insert transaction (what the database itself
#     does per commit on this machine);
#   - end to end (examples/seed binds E2E_N customers, examples/paced posts
#     their webhooks, smtp-sink counts the emails) on sled, one PostgreSQL
#     instance and two;
#   - bytes per eSIM in the database after the intake runs;
#   - the claim query under CLAIM_N queued notices (EXPLAIN ANALYZE).
#
#   bench/postgres.sh                       # about 5 minutes after the build
#   DURATION=3 CLAIM_N=10000 E2E_N=2000 bench/postgres.sh
#
# PG_URL names a server (default: the machine's, trust auth); the script
# makes its own databases there and drops them. Loopback only; nothing here
# asserts a timing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
PG_URL=${PG_URL:-postgres://root@127.0.0.1:5432/test}
CLAIM_N=${CLAIM_N:-100000}
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }

need_tools
command -v pgbench >/dev/null && command -v psql >/dev/null \
  || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null)
[ -n "${SKIP_BUILD:-}" ] || build
log "scratch directory: $WORK"

DBS=()
newdb() {
  local name="bench_$1_$$"
  psql -qAt "$PG_URL" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
  DBS+=("$name")
  echo "${PG_URL%/*}/$name"
}
dropdbs() {
  for d in "${DBS[@]}"; do psql -qAt "$PG_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
}
trap 'dropdbs; cleanup' EXIT

# serve NAME CONFIG: starts a server and waits for /readyz.
serve() {
  local admin
  admin=$(sed -n '/^\[admin\]/,/^\[/ s/^listen = "\(.*\)"/\1/p' "$2")
  "$BIN" --config "$2" serve 2>"$WORK/server-$1.log" &
  PIDS+=("$!")
  LAST_PID=$!
  wait_for "http://$admin/readyz" 200 60 || die "server $1 not ready: $(tail -5 "$WORK/server-$1.log")"
}

# wrk_on URL PREFIX CONNECTIONS: like run_wrk with a chosen connection count.
wrk_on() {
  timeout $((DURATION + 30)) wrk -t1 -c"$3" -d"$DURATION"s --timeout 10s -s "$ROOT/bench/intake.lua" "$1" -- "$2" \
    >"$WORK/wrk-$2.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk-$2.out")"
  grep '^wrk_result' "$WORK/wrk-$2.out" | sed 's/^wrk_result //'
}

pg_extra() { printf 'backend = "postgres"\nurl = "%s"\npool = %s\n' "$1" "${PG_POOL:-8}"; }

# ------------------------------------------------------------ baselines
log "baseline: bare actix-web handler"
BP=$(free_port)
"$REL/examples/bare" "127.0.0.1:$BP" 2>"$WORK/bare.log" &
BPID=$!; PIDS+=("$BPID")
wait_port "$BP" 20 || die "bare server did not start"
wrk_on "http://127.0.0.1:$BP/webhooks/esimaccess" bwarm 32 >/dev/null
B=$(wrk_on "http://127.0.0.1:$BP/webhooks/esimaccess" bare 32)
stop "$BPID"
BARE=$(kv rps "$B")

log "baseline: pgbench, one INSERT per transaction, 32 clients"
PGB_URL=$(newdb pgbench)
psql -qAt "$PGB_URL" -c "CREATE TABLE t (k bigserial PRIMARY KEY, v bytea NOT NULL)" >/dev/null
echo "INSERT INTO t (v) VALUES ('\\x0102030405060708');" >"$WORK/insert.sql"
pgbench -n -c 32 -j 2 -T "$DURATION" -f "$WORK/insert.sql" "$PGB_URL" >"$WORK/pgbench.out" 2>&1 \
  || die "pgbench failed: $(tail -5 "$WORK/pgbench.out")"
PGB=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.out" | head -1)

# ------------------------------------------------------------ sled
log "intake on sled"
P=$(free_port); A=$(free_port)
STORE_EXTRA="" write_config "$WORK/sled.toml" "$WORK/store-sled" "$P" "$A" 9
serve sled "$WORK/sled.toml"
wrk_on "http://127.0.0.1:$P/webhooks/esimaccess" swarm 32 >/dev/null
S=$(wrk_on "http://127.0.0.1:$P/webhooks/esimaccess" sled 32)
stop "$LAST_PID"
SLED=$(kv rps "$S")

# ------------------------------------------------------------ PostgreSQL, one instance
log "intake on PostgreSQL, one instance"
URL1=$(newdb one)
P=$(free_port); A=$(free_port)
STORE_EXTRA="$(pg_extra "$URL1")" write_config "$WORK/pg1.toml" "$WORK/unused1" "$P" "$A" 9
serve pg1 "$WORK/pg1.toml"
wrk_on "http://127.0.0.1:$P/webhooks/esimaccess" p1warm 32 >/dev/null
O=$(wrk_on "http://127.0.0.1:$P/webhooks/esimaccess" pg1 32)
stop "$LAST_PID"
ONE=$(kv rps "$O")
ESIMS=$(psql -qAt "$URL1" -c "SELECT count(*) FROM esims")
BYTES=$(psql -qAt "$URL1" -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")

# ------------------------------------------------------------ PostgreSQL, two instances
log "intake on PostgreSQL, two instances on one database (16 connections each)"
URL2=$(newdb two)
P1=$(free_port); A1=$(free_port); P2=$(free_port); A2=$(free_port)
STORE_EXTRA="$(pg_extra "$URL2")" write_config "$WORK/pg2a.toml" "$WORK/unused2" "$P1" "$A1" 9
STORE_EXTRA="$(pg_extra "$URL2")" write_config "$WORK/pg2b.toml" "$WORK/unused3" "$P2" "$A2" 9
serve pg2a "$WORK/pg2a.toml"; PA=$LAST_PID
serve pg2b "$WORK/pg2b.toml"; PB=$LAST_PID
wrk_on "http://127.0.0.1:$P1/webhooks/esimaccess" p2warm 16 >/dev/null
wrk_on "http://127.0.0.1:$P1/webhooks/esimaccess" twoA 16 >"$WORK/twoA.line" &
WA=$!
wrk_on "http://127.0.0.1:$P2/webhooks/esimaccess" twoB 16 >"$WORK/twoB.line"
wait "$WA"
stop "$PA"; stop "$PB"
TWO=$(calc "$(kv rps "$(cat "$WORK/twoA.line")") + $(kv rps "$(cat "$WORK/twoB.line")")" 0)

# ------------------------------------------------------------ the claim
log "claim under $CLAIM_N queued notices"
URL3=$(newdb claim)
P=$(free_port); A=$(free_port)
STORE_EXTRA="$(pg_extra "$URL3")" write_config "$WORK/pg3.toml" "$WORK/unused4" "$P" "$A" 9
serve pg3 "$WORK/pg3.toml"   # creates the schema
stop "$LAST_PID"
# Queue rows as the engine indexes them: one eSIM per 4 notices, due times
# spread over the last and the next hour, a tenth of them leased.
psql -qAt "$URL3" >/dev/null <<SQL
INSERT INTO queue (key, value, esim, due, lease_until, owner, token)
SELECT int8send(i), '\\x00', i / 4,
       now() + make_interval(secs => (random() * 7200 - 3600)),
       CASE WHEN i % 10 = 0 THEN now() + interval '60 s' END,
       CASE WHEN i % 10 = 0 THEN 'bench' END, 0
FROM generate_series(1, $CLAIM_N) AS i;
ANALYZE queue;
SQL
CLAIM_SQL="WITH c AS (SELECT q.key, q.owner, q.lease_until FROM queue q WHERE q.esim IS NOT NULL AND q.due <= now() AND (q.lease_until IS NULL OR q.lease_until <= now()) AND NOT EXISTS (SELECT 1 FROM queue p WHERE p.esim = q.esim AND p.key < q.key) ORDER BY q.due LIMIT 4 FOR UPDATE OF q SKIP LOCKED) UPDATE queue SET lease_until = now() + make_interval(secs => 60), owner = 'bench', token = queue.token + 1 FROM c WHERE queue.key = c.key RETURNING queue.key"
psql -qAt "$URL3" -c "BEGIN" -c "EXPLAIN (ANALYZE, BUFFERS) $CLAIM_SQL" -c "ROLLBACK" >"$WORK/claim-explain.txt"
CLAIM_MS=$(sed -n 's/^Execution Time: \([0-9.]*\) ms/\1/p' "$WORK/claim-explain.txt")
# And ten claims in a row, committed, as instances run them.
WORST=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  T=$(psql -qAt "$URL3" -c "EXPLAIN (ANALYZE) $CLAIM_SQL" | sed -n 's/^Execution Time: \([0-9.]*\) ms/\1/p')
  WORST=$(awk -v a="$WORST" -v b="$T" 'BEGIN { print (b > a) ? b : a }')
done

# ------------------------------------------------------------ end to end
# E2E_N notices for as many bound customers (examples/seed), posted as fast
# as they are taken (examples/paced), until smtp-sink has accepted them all:
# on sled, on PostgreSQL with one instance, then two instances each posted
# half (each sending what it claims; one SMTP sink for the group).
E2E_N=${E2E_N:-10000}
S=$(free_port)
SINKDIR=$(mktemp -d /dev/shm/esim-sink.XXXXXX 2>/dev/null || mktemp -d "$WORK/sink.XXXXXX")
chmod 777 "$SINKDIR"
start_sink() {
  rm -f "$SINKDIR"/dump* "$WORK/sink-$1.out"
  /usr/sbin/smtp-sink -u nobody -c "127.0.0.1:$S" 1024 >"$WORK/sink-$1.out" 2>&1 &
  SINKPID=$!; PIDS+=("$SINKPID")
  wait_port "$S" 10 || die "smtp-sink did not start"
}
# e2e NAME STORE_EXTRA: seeds, serves one or two instances (E2E_TWO=1),
# posts, waits for the sink; prints emails/s.
e2e() {
  local name=$1 extra=$2 p1 a1 p2 a2 t0 t1 got deadline
  p1=$(free_port); a1=$(free_port); p2=$(free_port); a2=$(free_port)
  STORE_EXTRA="$extra" write_config "$WORK/e2e-$name-a.toml" "$WORK/store-e2e-$name" "$p1" "$a1" "$S"
  STORE_EXTRA="$extra" write_config "$WORK/e2e-$name-b.toml" "$WORK/store-e2e-$name" "$p2" "$a2" "$S"
  timeout 300 "$REL/examples/seed" --config "$WORK/e2e-$name-a.toml" --prefix "e$name" --count "$E2E_N" >"$WORK/seed-$name.out" ||
    die "seeding customers failed: $(tail -3 "$WORK/seed-$name.out")"
  start_sink "$name"
  serve "e2e-$name-a" "$WORK/e2e-$name-a.toml"; local sa=$LAST_PID sb=""
  if [ -n "${E2E_TWO:-}" ]; then serve "e2e-$name-b" "$WORK/e2e-$name-b.toml"; sb=$LAST_PID; fi
  t0=$(now_ns)
  if [ -n "$sb" ]; then
    local half=$((E2E_N / 2))
    timeout 300 "$REL/examples/paced" --addr "127.0.0.1:$p1" --count "$half" --connections 16 --prefix "e$name" >"$WORK/paced-$name-a.out" &
    local pa=$!
    timeout 300 "$REL/examples/paced" --addr "127.0.0.1:$p2" --count "$((E2E_N - half))" --start "$half" --connections 16 --prefix "e$name" >"$WORK/paced-$name-b.out" ||
      die "posting failed"
    wait "$pa" || die "posting failed"
  else
    timeout 300 "$REL/examples/paced" --addr "127.0.0.1:$p1" --count "$E2E_N" --connections 32 --prefix "e$name" >"$WORK/paced-$name-a.out" ||
      die "posting failed"
  fi
  deadline=$((SECONDS + 300)); got=0
  while [ $SECONDS -lt $deadline ]; do
    got=$(sink_count "$WORK/sink-$name.out")
    [ "$got" -ge "$E2E_N" ] && break
    sleep 0.02
  done
  t1=$(now_ns)
  stop "$sa"; [ -z "$sb" ] || stop "$sb"
  stop "$SINKPID"
  if [ "$got" -ge "$E2E_N" ]; then calc "$E2E_N / (($t1 - $t0) / 1e9)" 0; else echo "incomplete: $got of $E2E_N"; fi
}
log "end to end: $E2E_N notices on sled"
E_SLED=$(e2e sled "")
log "end to end on PostgreSQL, one instance"
E_ONE=$(e2e pgone "$(pg_extra "$(newdb e2eone)")")
log "end to end on PostgreSQL, two instances"
E_TWO=$(E2E_TWO=1 e2e pgtwo "$(pg_extra "$(newdb e2etwo)")")
rm -rf "$SINKDIR"

row "intake, sled, req/s (wrk -c32)" "$SLED" "bare actix $BARE" "$(calc "$SLED / $BARE")"
row "intake, PostgreSQL one instance, req/s" "$ONE" "sled $SLED; pgbench one-insert tps $PGB" "$(calc "$ONE / $SLED") of sled (target ≥ 0.5); $(calc "$ONE / $PGB") of pgbench"
row "intake, PostgreSQL two instances, req/s (sum)" "$TWO" "one instance $ONE" "$(calc "$TWO / $ONE") (target ≥ 1)"
row "end to end, sled, emails/s ($E2E_N notices to smtp-sink)" "$E_SLED" "" ""
row "end to end, PostgreSQL one instance, emails/s" "$E_ONE" "sled $E_SLED" "$(calc "$E_ONE / $E_SLED") of sled"
row "end to end, PostgreSQL two instances, emails/s (together)" "$E_TWO" "one instance $E_ONE" "$(calc "$E_TWO / $E_ONE")"
row "bytes per eSIM in the database (all tables and indexes)" "$(calc "$BYTES / $ESIMS" 0)" "$ESIMS eSIMs, $BYTES B" ""
row "claim of 4 due heads at $CLAIM_N queued, ms" "$CLAIM_MS (worst of 10 more: $WORST)" "" "target ≤ 5 ms"

echo
echo "| figure | value | baseline | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "EXPLAIN ANALYZE of the claim:"
sed 's/^/    /' "$WORK/claim-explain.txt"
