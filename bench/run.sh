#!/usr/bin/env bash
# esim-notify benchmarks (issues 6 and 10): intake, end to end, disk, scale. One table.
#
#   bench/run.sh                      # everything, about 6 minutes after the build
#   PHASES="intake" bench/run.sh      # some of: intake e2e disk scale
#   DURATION=3 E2E_N=500 DISK_N=2000 SCALE_ESIMS=20000 bench/run.sh   # a tiny smoke run
#
# Loopback only. Installs wrk, postfix (for smtp-sink / smtp-source, its
# service is not started) and GNU time from Debian when they are missing,
# builds the release binary, and stops everything it started on exit.
# Not a test: nothing here asserts a timing; the table says which targets
# of issue 6 are met. KEEP_WORK=1 keeps the scratch directory (logs, stores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PHASES=${PHASES:-"intake e2e disk scale"}
DURATION=${DURATION:-10}           # seconds of each wrk / paced run
E2E_N=${E2E_N:-10000}              # notices (and customers) end to end
E2E_TIMEOUT=${E2E_TIMEOUT:-300}    # seconds to wait for the sink to get them all
SCALE_ESIMS=${SCALE_ESIMS:-1000000}
DISK_N=${DISK_N:-50000}            # webhooks posted over HTTP in the disk phase
POOL_SIZE=${POOL_SIZE:-4}
export POOL_SIZE

has() { [[ " $PHASES " == *" $1 "* ]] && log "load average before phase $1: $(cut -d' ' -f1-3 /proc/loadavg)"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
met() { awk "BEGIN { exit !($1) }" && echo "met" || echo "**not met**"; }

need_tools
[ -n "${SKIP_BUILD:-}" ] || build
for b in "$BIN" "$REL/examples/bare" "$REL/examples/paced" "$REL/examples/seed" "$REL/examples/load"; do
  [ -x "$b" ] || die "$b is missing (build first)"
done
log "scratch directory: $WORK"

# start_server NAME CONFIG [wrapper...]: starts, waits for /readyz; sets SPID
# (the launched process) and READY_MS (exec to the first 200 from /readyz).
start_server() {
  local name=$1 config=$2 admin
  shift 2
  admin=$(sed -n '/^\[admin\]/,/^\[/ s/^listen = "\(.*\)"/\1/p' "$config")
  local t0
  t0=$(now_ns)
  "$@" "$BIN" --config "$config" serve 2>"$WORK/server-$name.log" &
  SPID=$!
  PIDS+=("$SPID")
  wait_for "http://$admin/readyz" 200 60 || die "server $name not ready in 60 s: $(tail -5 "$WORK/server-$name.log")"
  READY_MS=$(( ($(now_ns) - t0) / 1000000 ))
}

# ---------------------------------------------------------------- 1. intake
INTAKE_RPS=""
if has intake; then
  log "1. intake: esim-notify, empty store"
  P=$(free_port); A=$(free_port)
  write_config "$WORK/intake.toml" "$WORK/store-intake" "$P" "$A" 9
  start_server intake "$WORK/intake.toml"
  URL="http://127.0.0.1:$P/webhooks/esimaccess"
  run_wrk "$URL" warm 2 >/dev/null
  R=$(run_wrk "$URL" intake "$DURATION")
  log "   $R"
  INTAKE_RPS=$(kv rps "$R")
  [ "$(kv non2xx "$R")" = 0 ] && [ "$(kv errors "$R")" = 0 ] || log "   warning: errors or non-200 answers in the intake run"

  log "1. intake: bare actix-web handler (examples/bare.rs)"
  BP=$(free_port)
  "$REL/examples/bare" "127.0.0.1:$BP" 2>"$WORK/bare.log" &
  BPID=$!; PIDS+=("$BPID")
  wait_port "$BP" 20 || die "bare server did not start"
  run_wrk "http://127.0.0.1:$BP/webhooks/esimaccess" bwarm 2 >/dev/null
  B=$(run_wrk "http://127.0.0.1:$BP/webhooks/esimaccess" bare "$DURATION")
  log "   $B"
  stop "$BPID"
  BARE_RPS=$(kv rps "$B")
  RATIO=$(calc "$INTAKE_RPS / $BARE_RPS")
  row "1" "intake, req/s (wrk -t1 -c32, ${DURATION}s)" "$INTAKE_RPS" "bare actix: $BARE_RPS" "$RATIO" "≥ 0.30 of bare: $(met "$RATIO >= 0.30")"
  row "1" "intake latency p50 / p99 at saturation" "$(kv p50_ms "$R") / $(kv p99_ms "$R") ms" "$(kv p50_ms "$B") / $(kv p99_ms "$B") ms" "" ""

  HALF=$(calc "$INTAKE_RPS / 2" 0)
  log "1. intake: paced at half saturation, $HALF req/s (examples/paced.rs)"
  H=$(timeout $((DURATION + 60)) "$REL/examples/paced" --addr "127.0.0.1:$P" --rate "$HALF" \
      --duration "$DURATION" --connections 32 --prefix half) || die "paced run failed"
  log "   $H"
  P99=$(kv p99_ms "$H")
  row "1" "intake latency at half saturation, p50 / p99" "$(kv p50_ms "$H") / $P99 ms at $(kv rate "$H") req/s" "" "" "p99 ≤ 5 ms: $(met "$P99 <= 5")"
  [ "$(kv failed "$H")" = 0 ] || log "   warning: $(kv failed "$H") paced requests failed"
  SPID_REAL=$(server_pid "$SPID")
  INTAKE_RSS=$(rss_mb "$SPID_REAL")
  stop "$SPID"
  row "1" "store after the intake runs (du -sb), RSS" "$(du -sb "$WORK/store-intake" | cut -f1) B, $INTAKE_RSS MB" "" "" ""

  # What the real sync costs (issue 9): the same run on a fresh store with the
  # fdatasync after each group commit turned off. ESIM_NOTIFY_UNSAFE_NO_FDATASYNC
  # is a bench-only knob: a server run with it can lose acknowledged webhooks
  # on a power cut.
  log "1. intake: the same without the fdatasync (ESIM_NOTIFY_UNSAFE_NO_FDATASYNC=1, bench only)"
  P=$(free_port); A=$(free_port)
  write_config "$WORK/intake-nosync.toml" "$WORK/store-intake-nosync" "$P" "$A" 9
  start_server intake-nosync "$WORK/intake-nosync.toml" env ESIM_NOTIFY_UNSAFE_NO_FDATASYNC=1
  URL="http://127.0.0.1:$P/webhooks/esimaccess"
  run_wrk "$URL" nswarm 2 >/dev/null
  N=$(run_wrk "$URL" nosync "$DURATION")
  log "   $N"
  stop "$SPID"
  NOSYNC_RPS=$(kv rps "$N")
  row "1" "intake with the fdatasync per group commit vs without, req/s (p99)" "$INTAKE_RPS ($(kv p99_ms "$R") ms)" "no fdatasync: $NOSYNC_RPS ($(kv p99_ms "$N") ms)" "$(calc "$INTAKE_RPS / $NOSYNC_RPS")" ""
fi

# ------------------------------------------------------------ 2. end to end
if has e2e; then
  log "2. end to end: $E2E_N notices for $E2E_N bound customers to smtp-sink"
  S=$(free_port); P=$(free_port); A=$(free_port)
  SINKDIR=$(mktemp -d /dev/shm/esim-sink.XXXXXX 2>/dev/null || mktemp -d "$WORK/sink.XXXXXX")
  chmod 777 "$SINKDIR"
  # Same sink, same options, for both runs; -D keeps the messages so we
  # know the size of ours (on tmpfs when there is one).
  start_sink() {
    rm -f "$SINKDIR"/dump* "$WORK/sink-$1.out"
    /usr/sbin/smtp-sink -u nobody -c -D "$SINKDIR/dump" "127.0.0.1:$S" 1024 >"$WORK/sink-$1.out" 2>&1 &
    SINKPID=$!; PIDS+=("$SINKPID")
    wait_port "$S" 10 || die "smtp-sink did not start"
  }
  write_config "$WORK/e2e.toml" "$WORK/store-e2e" "$P" "$A" "$S"
  timeout 300 "$REL/examples/seed" --config "$WORK/e2e.toml" --prefix e2e --count "$E2E_N" >"$WORK/seed.out" ||
    die "seeding customers failed"
  log "   $(cat "$WORK/seed.out")"
  start_sink ours
  start_server e2e "$WORK/e2e.toml"
  T0=$(now_ns)
  POST=$(timeout 300 "$REL/examples/paced" --addr "127.0.0.1:$P" --count "$E2E_N" --connections 32 --prefix e2e) ||
    die "posting the webhooks failed"
  log "   webhooks: $POST"
  DEADLINE=$((SECONDS + E2E_TIMEOUT)); GOT=0
  while [ $SECONDS -lt $DEADLINE ]; do
    GOT=$(sink_count "$WORK/sink-ours.out")
    [ "$GOT" -ge "$E2E_N" ] && break
    sleep 0.02
  done
  T1=$(now_ns)
  E2E_S=$(calc "($T1 - $T0) / 1e9" 3)
  stop "$SPID"
  stop "$SINKPID"
  MSG=$(awk '
    /^X-Client-Addr:/ { n++; if (n == 2) exit; first = 1; next }
    n == 1 && /^X-(Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):/ { next }
    n == 1 && first && /^Received: / { inrcv = 1; first = 0; next }
    n == 1 && inrcv && /^[ \t]/ { next }
    n == 1 { inrcv = 0; first = 0; bytes += length($0) + 2 }
    END { print bytes + 0 }' "$SINKDIR"/dump* 2>/dev/null || echo 0)
  log "   sink accepted $GOT of $E2E_N in $E2E_S s; one message is $MSG bytes"
  if [ "$GOT" -ge "$E2E_N" ]; then
    OURS=$(calc "$E2E_N / $E2E_S" 1)
  else
    OURS="incomplete: $GOT of $E2E_N in ${E2E_S}s"
  fi

  # smtp-source adds about 130 bytes of headers (From, To, Date, Message-Id) to -l.
  L=$(( MSG > 200 ? MSG - 130 : 5000 ))
  start_sink source
  S0=$(now_ns)
  timeout 300 /usr/sbin/smtp-source -d -s "$POOL_SIZE" -m "$E2E_N" -l "$L" \
    -f noreply@example.com -t c0.e2e@example.com "127.0.0.1:$S" >"$WORK/source.out" 2>&1 ||
    die "smtp-source failed: $(cat "$WORK/source.out")"
  DEADLINE=$((SECONDS + 30))
  while [ "$(sink_count "$WORK/sink-source.out")" -lt "$E2E_N" ] && [ $SECONDS -lt $DEADLINE ]; do sleep 0.02; done
  S1=$(now_ns)
  SRC_S=$(calc "($S1 - $S0) / 1e9" 3)
  SRC=$(calc "$E2E_N / $SRC_S" 1)
  stop "$SINKPID"
  rm -rf "$SINKDIR"
  if [ "$GOT" -ge "$E2E_N" ]; then
    RATIO=$(calc "$OURS / $SRC")
    row "2" "end to end, emails/s ($E2E_N notices, first webhook → last accepted, pool $POOL_SIZE)" "$OURS ($E2E_S s)" "smtp-source -d -s $POOL_SIZE: $SRC ($SRC_S s)" "$RATIO" "≥ 0.50: $(met "$RATIO >= 0.50")"
  else
    row "2" "end to end, emails/s ($E2E_N notices)" "$OURS" "smtp-source -d -s $POOL_SIZE: $SRC ($SRC_S s)" "n/a" "not measured"
  fi
  row "2" "  of which posting the $E2E_N webhooks (paced --count, 32 conns)" "$(kv elapsed_s "$POST") s, $(kv rate "$POST") req/s" "" "" ""
  row "2" "  one message on the wire" "$MSG bytes" "-l $L (+ its headers)" "" ""
fi

# ------------------------------------------------------------------ 3. disk
# What one webhook costs on disk (issue 10): DISK_N distinct DATA_USAGE
# deliveries over HTTP to the release binary on a fresh store (5 % left, so
# each one is a new eSIM with a parked notice), the bytes the server process
# made the kernel write (/proc/PID/io write_bytes: sled's log, its syncs and
# snapshots) and the store's size after a clean stop.
if has disk; then
  log "3. disk: $DISK_N distinct DATA_USAGE webhooks over HTTP to a fresh store"
  P=$(free_port); A=$(free_port)
  write_config "$WORK/disk.toml" "$WORK/store-disk" "$P" "$A" 9
  start_server disk "$WORK/disk.toml"
  SREAL=$(server_pid "$SPID")
  W0=$(awk '/^write_bytes/ {print $2}' "/proc/$SREAL/io")
  POSTED=$(timeout 600 "$REL/examples/paced" --addr "127.0.0.1:$P" --count "$DISK_N" --connections 32 --prefix disk) ||
    die "posting the disk phase's webhooks failed"
  log "   $POSTED"
  W1=$(awk '/^write_bytes/ {print $2}' "/proc/$SREAL/io")
  DISK_RSS=$(rss_mb "$SREAL")
  stop "$SPID"
  ACCEPTED=$(kv ok "$POSTED")
  PER_HOOK=$(calc "($W1 - $W0) / $ACCEPTED" 0)
  STORE_B=$(du -sb "$WORK/store-disk" | cut -f1)
  PER_ESIM=$(calc "$STORE_B / $ACCEPTED" 0)
  row "3" "bytes written to disk per accepted webhook ($ACCEPTED over HTTP, /proc/PID/io write_bytes)" "$PER_HOOK B" "" "" "≤ 5 000 B: $(met "$PER_HOOK <= 5000")"
  row "3" "store on disk per eSIM after them (du -sb ÷ eSIMs), RSS" "$PER_ESIM B ($STORE_B B), $DISK_RSS MB" "" "" "≤ 1 000 B: $(met "$PER_ESIM <= 1000")"
  if [ -x "$REL/examples/store_stats" ]; then
    STATS=$("$REL/examples/store_stats" --config "$WORK/disk.toml" | tail -1)
    row "3" "  of which records (keys and values, as stored)" "$(calc "$(kv bytes "$STATS") / $ACCEPTED" 0) B per eSIM" "" "" ""
  fi
fi

# ----------------------------------------------------------------- 4. scale
if has scale; then
  log "4. scale: loading $SCALE_ESIMS distinct eSIMs offline through Engine::ingest (examples/load.rs)"
  P=$(free_port); A=$(free_port)
  write_config "$WORK/scale.toml" "$WORK/store-scale" "$P" "$A" 9
  LOADED=$(timeout 1800 "$REL/examples/load" --config "$WORK/scale.toml" --prefix scale --count "$SCALE_ESIMS" 2>"$WORK/load.log") ||
    die "loading failed: $(tail -3 "$WORK/load.log")"
  log "   $LOADED"
  DISK=$(du -sb "$WORK/store-scale" | cut -f1)
  start_server scale "$WORK/scale.toml" /usr/bin/time -v -o "$WORK/time-scale.txt"
  SREAL=$(server_pid "$SPID")
  sleep 5
  RSS_IDLE=$(rss_mb "$SREAL")
  R=$(run_wrk "http://127.0.0.1:$P/webhooks/esimaccess" scalewrk "$DURATION")
  log "   $R"
  sleep 2
  RSS_AFTER=$(rss_mb "$SREAL")
  stop "$SPID"
  PEAK=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2/1024 }' "$WORK/time-scale.txt")
  FIRST_READY_MS=$READY_MS
  # A restart: sled writes a snapshot of its page table when it opens, so
  # this start reads that and replays only what was written since (the wrk run).
  start_server scale-restart "$WORK/scale.toml"
  RESTART_MS=$READY_MS
  SREAL=$(server_pid "$SPID")
  sleep 5
  RSS_RESTART=$(rss_mb "$SREAL")
  stop "$SPID"
  DISK_AFTER=$(du -sb "$WORK/store-scale" | cut -f1)
  SCALE_RPS=$(kv rps "$R")
  row "4" "eSIMs loaded (offline, real Engine::ingest, one flush at the end)" "$(kv loaded "$LOADED") in $(kv elapsed_s "$LOADED") s" "" "" ""
  row "4" "store on disk (du -sb) after loading / after the wrk run" "$DISK / $DISK_AFTER B" "" "" ""
  row "4" "store on disk per eSIM after loading (du -sb ÷ eSIMs)" "$(calc "$DISK / $SCALE_ESIMS" 0) B" "" "" "≤ 1 000 B: $(met "$DISK / $SCALE_ESIMS <= 1000")"
  row "4" "start-up until /readyz answers 200 ($SCALE_ESIMS eSIMs): first after the offline load (sled replays its whole log) / restart" "$FIRST_READY_MS / $RESTART_MS ms" "" "" "≤ 1000 ms: first $(met "$FIRST_READY_MS <= 1000"), restart $(met "$RESTART_MS <= 1000")"
  row "4" "resident memory with $SCALE_ESIMS eSIMs: steady idle / after wrk / peak (first start) / idle after a restart" "$RSS_IDLE / $RSS_AFTER / $PEAK / $RSS_RESTART MB" "" "" "≤ 150 MB steady: $(met "${RSS_AFTER:-9999} <= 150")"
  if [ -n "$INTAKE_RPS" ]; then
    row "4" "intake at $SCALE_ESIMS eSIMs, req/s (p50 / p99)" "$SCALE_RPS ($(kv p50_ms "$R") / $(kv p99_ms "$R") ms)" "empty store: $INTAKE_RPS" "$(calc "$SCALE_RPS / $INTAKE_RPS")" ""
  else
    row "4" "intake at $SCALE_ESIMS eSIMs, req/s (p50 / p99)" "$SCALE_RPS ($(kv p50_ms "$R") / $(kv p99_ms "$R") ms)" "(run the intake phase too for the ratio)" "" ""
  fi
fi

echo
echo "esim-notify $(git -C "$ROOT" describe --always --dirty 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(free -h | awk '/^Mem:/ {print $2}') RAM, load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| # | figure | esim-notify | baseline (same run) | ratio | target |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
