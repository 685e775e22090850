-- wrk script for the intake benchmark: every request is a DATA_USAGE
-- webhook with a new notifyId about a new eSIM, 5 % of its data left, so
-- each one is a new eSIM, a new notice and a write the 200 must wait for.
-- Same shape as examples/benchkit/mod.rs `data_usage(prefix, n, 5)`.
--   wrk -t1 -c32 -d10s -s bench/intake.lua http://127.0.0.1:PORT/webhooks/esimaccess -- PREFIX
local prefix = "wrk"
local n = 0

function init(args)
  if args[1] then prefix = args[1] end
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- 50 GB plan, 5 % left (integers kept as text: they exceed 32 bits).
local TOTAL, USED, REMAIN = "53687091200", "51002736640", "2684354560"

function request()
  local k = n
  n = n + 1
  local tran = string.format("%s%09d", prefix, k)
  local body = '{"notifyType":"DATA_USAGE","notifyId":"' .. prefix .. '-n' .. k ..
    '","eventGenerateTime":"2026-04-22T17:21:59Z","content":{"iccid":"8985' ..
    string.format("%015d", k) .. '","orderNo":"B' .. tran .. '","esimTranNo":"' .. tran ..
    '","transactionId":"' .. prefix .. '-tx' .. k .. '","totalVolume":' .. TOTAL ..
    ',"orderUsage":' .. USED .. ',"remain":' .. REMAIN ..
    ',"remainThreshold":0.1,"lastUpdateTime":"2026-04-22T15:53:03Z"}}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "wrk_result requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
