# Shared by bench/run.sh and bench/soak.sh: tools, build, configs, processes.
# Everything listens on 127.0.0.1 only; every wait has a timeout; every
# process started here is stopped on exit.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$TARGET_DIR/release
BIN=$REL/esim-notify
WORK=${BENCH_WORK:-$(mktemp -d /tmp/esim-bench.XXXXXX)}
mkdir -p "$WORK"
# smtp-sink drops privileges to nobody, which must be able to write its dump.
chmod 755 "$WORK"
PIDS=()

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    # Children first (the server under /usr/bin/time), then the process itself.
    pkill -TERM -P "$p" 2>/dev/null || true
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    timeout 15 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  done
  if [ -n "${KEEP_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wrk, postfix's smtp-sink/smtp-source and GNU time, from Debian when missing.
# postfix is installed unconfigured ("No configuration"): its service is not
# started and nothing of it runs but the two test tools, which we start.
need_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  { [ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ]; } || missing+=(postfix)
  [ -x /usr/bin/time ] || missing+=(time)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them"
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run as root or: sudo apt-get install -y ${missing[*]}"
  log "installing ${missing[*]} from Debian"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
    { timeout 300 apt-get update -q >>"$WORK/apt.log" 2>&1 &&
      timeout 300 apt-get install -y -q "${missing[@]}" >>"$WORK/apt.log" 2>&1; } ||
    die "apt-get install failed, see $WORK/apt.log"
}

build() {
  log "building the release binary and the bench examples ($TARGET_DIR)"
  (cd "$ROOT" && timeout 1800 cargo build --release -q --bin esim-notify \
    --example bare --example paced --example seed --example load --example store_stats) || die "build failed"
}

# A free loopback port (bash's /dev/tcp: a refused connection means free).
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

# write_config FILE STORE_DIR PUBLIC_PORT ADMIN_PORT SMTP_PORT [EXTRA_TOML]
write_config() {
  cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$3"
[admin]
listen = "127.0.0.1:$4"
[store]
path = "$2"
${STORE_EXTRA:-}
[email]
transport = "smtp"
file_dir = "$WORK/mail-out"
[email.smtp]
host = "127.0.0.1"
port = $5
tls = "none"
pool_size = ${POOL_SIZE:-4}
[rate_limit]
per_second = 100000
burst = 100000
per_recipient_per_hour = 0
[retry]
initial_backoff = "1s"
max_backoff = "5s"
[templates]
dir = "$ROOT/templates"
[log]
level = "${LOG_LEVEL:-info}"
${6:-}
TOML
}

# http_code URL: the status code, 000 when nothing answers (1 s at most).
http_code() { curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null || true; }

# wait_for URL CODE SECONDS: polls every 10 ms until URL answers CODE.
wait_for() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt "$deadline" ]; do
    [ "$(http_code "$1")" = "$2" ] && return 0
    sleep 0.01
  done
  return 1
}

# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.
wait_port() {
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt "$deadline" ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

now_ns() { date +%s%N; }

# stop PID [SECONDS]: SIGTERM and wait for it to go. A wrapper (the server
# under /usr/bin/time) is left to exit by itself once its child has, so
# that it can still write its report.
stop() {
  if pgrep -P "$1" >/dev/null 2>&1; then
    pkill -TERM -P "$1" 2>/dev/null || true
  else
    kill -TERM "$1" 2>/dev/null || true
  fi
  timeout "${2:-30}" tail --pid="$1" -f /dev/null 2>/dev/null || {
    log "pid $1 did not stop in time: killing it"
    pkill -KILL -P "$1" 2>/dev/null || true
    kill -KILL "$1" 2>/dev/null || true
  }
}

# The server's own PID when it runs under /usr/bin/time.
server_pid() { pgrep -P "$1" -x esim-notify || echo "$1"; }

rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }
hwm_mb() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# kv KEY LINE: the value of KEY=value in a line of key=value pairs.
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p;s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }

# calc EXPR: floating point arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# run_wrk URL PREFIX SECONDS: one thread, 32 connections; prints the wrk_result line.
run_wrk() {
  timeout $(($3 + 30)) wrk -t1 -c32 -d"$3"s --timeout 10s -s "$ROOT/bench/intake.lua" "$1" -- "$2" \
    >"$WORK/wrk-$2.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk-$2.out")"
  grep '^wrk_result' "$WORK/wrk-$2.out" | sed 's/^wrk_result //'
}

# The count of messages smtp-sink -c has accepted so far (0 before any).
sink_count() { tr '\r' '\n' <"$1" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 | grep . || echo 0; }
