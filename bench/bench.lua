-- wrk script: POSTs one JSON body with an optional bearer token and checks every
-- answer, so that a fast wrong answer cannot win. Configured from the environment:
--   BENCH_BODY    the request body (JSON)
--   BENCH_AUTH    "Bearer ..." or empty
--   BENCH_EXPECT  substrings separated by "|" that a valid answer must contain
-- done() prints one line "BENCH_JSON {...}" with counts and latency percentiles (µs).

local body = os.getenv("BENCH_BODY") or "{}"
local auth = os.getenv("BENCH_AUTH") or ""
local expect = {}
for piece in string.gmatch(os.getenv("BENCH_EXPECT") or "", "[^|]+") do
  table.insert(expect, piece)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  if auth ~= "" then
    wrk.headers["Authorization"] = auth
  end
  ok, non2xx, invalid = 0, 0, 0
  first_bad = ""
end

local function valid(text)
  for _, piece in ipairs(expect) do
    if not string.find(text, piece, 1, true) then
      return false
    end
  end
  return true
end

function response(status, headers, text)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(text or "", 1, 300) end
  elseif not valid(text or "") then
    invalid = invalid + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(text or "", 1, 300) end
  else
    ok = ok + 1
  end
end

local function quote(s)
  s = string.gsub(s, "\\", "\\\\")
  s = string.gsub(s, '"', '\\"')
  s = string.gsub(s, "[%c]", " ")
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local total_ok, total_non2xx, total_invalid, bad = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    total_ok = total_ok + (thread:get("ok") or 0)
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    total_invalid = total_invalid + (thread:get("invalid") or 0)
    if bad == "" then bad = thread:get("first_bad") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok":%d,"non2xx":%d,"invalid":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"first_bad":%s}\n',
    summary.requests, summary.duration, total_ok, total_non2xx, total_invalid,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    quote(bad)))
end
