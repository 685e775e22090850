#!/usr/bin/env bash
# Soak run (issue 5): SOAK_N events through the built binary with rate limits
# lifted and retention shortened to seconds, printing the store's size on
# disk over time so one can see whether it levels off.
#
#   bench/soak.sh                                  # 100 000 events at 500/s, then 60 s idle
#   SOAK_N=20000 SOAK_RATE=2000 SOAK_TAIL=30 bench/soak.sh
#
# Every event is a DATA_USAGE with a new notifyId about a new eSIM (5 % of
# its data left), and every eSIM's customer is bound beforehand (offline,
# examples/seed.rs), so each event queues one email, sent to postfix's
# smtp-sink on loopback. With `[store] delivery_dedup = "5s"` and
# `history = "10s"` the periodic retention task should keep the store at a
# few seconds' worth of traffic. Bounded, loopback only, cleans up on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SOAK_N=${SOAK_N:-100000}
SOAK_RATE=${SOAK_RATE:-500}
SOAK_TAIL=${SOAK_TAIL:-60}        # seconds of sampling after the last event
SAMPLE=${SAMPLE:-5}               # seconds between samples
DEDUP=${DEDUP:-5s}
HISTORY=${HISTORY:-10s}

need_tools
[ -n "${SKIP_BUILD:-}" ] || build
log "scratch directory: $WORK"

S=$(free_port); P=$(free_port); A=$(free_port)
STORE_EXTRA="delivery_dedup = \"$DEDUP\"
history = \"$HISTORY\"" write_config "$WORK/soak.toml" "$WORK/store" "$P" "$A" "$S"

log "binding $SOAK_N customers offline"
timeout 900 "$REL/examples/seed" --config "$WORK/soak.toml" --prefix soak --count "$SOAK_N" >"$WORK/seed.out" ||
  die "seeding failed"
log "   $(cat "$WORK/seed.out")"

/usr/sbin/smtp-sink -u nobody -c "127.0.0.1:$S" 1024 >"$WORK/sink.out" 2>&1 &
SINK=$!; PIDS+=("$SINK")
wait_port "$S" 10 || die "smtp-sink did not start"

"$BIN" --config "$WORK/soak.toml" serve 2>"$WORK/server.log" &
SRV=$!; PIDS+=("$SRV")
wait_for "http://127.0.0.1:$A/readyz" 200 60 || die "server not ready: $(tail -5 "$WORK/server.log")"

metric() {
  curl -s -m 2 "http://127.0.0.1:$A/metrics" 2>/dev/null |
    awk -v m="$1" -v o="$2" 'index($0, m "{") == 1 && index($0, "outcome=\"" o "\"") { s += $NF } END { printf "%d", s }'
}
sample() {
  printf '%6s %10s %10s %10s %14s %8s\n' "$(( SECONDS - START ))" \
    "$(metric esim_notify_webhooks_total accepted)" "$(metric esim_notify_notices_total sent)" \
    "$(sink_count "$WORK/sink.out")" "$(du -sb "$WORK/store" | cut -f1)" "$(rss_mb "$SRV")"
}

DUR=$(calc "$SOAK_N / $SOAK_RATE" 0)
log "posting $SOAK_N events at $SOAK_RATE/s (~${DUR}s), then sampling for ${SOAK_TAIL}s; dedup $DEDUP, history $HISTORY"
printf '%6s %10s %10s %10s %14s %8s\n' t_s accepted sent sink_got store_bytes rss_mb
START=$SECONDS
timeout $((DUR * 3 + 120)) "$REL/examples/paced" --addr "127.0.0.1:$P" --rate "$SOAK_RATE" --count "$SOAK_N" \
  --connections 32 --prefix soak >"$WORK/paced.out" 2>&1 &
GEN=$!; PIDS+=("$GEN")
while kill -0 "$GEN" 2>/dev/null; do sample; sleep "$SAMPLE"; done
wait "$GEN" || die "load generator failed: $(cat "$WORK/paced.out")"
END_T=$((SECONDS + SOAK_TAIL))
while [ $SECONDS -lt $END_T ]; do sample; sleep "$SAMPLE"; done
sample
log "generator: $(cat "$WORK/paced.out")"
log "retention runs logged: $(grep -c 'retention' "$WORK/server.log" || true); last: $(grep 'retention' "$WORK/server.log" | tail -1 | cut -c1-300)"
du -sb "$WORK/store"/* | sed 's/^/  /' >&2
