-- Presents what the Router tells every caller about an answer, besides the answer itself, to
-- REST callers: its metadata of its own names becomes x-inference-provider and x-request-id, and
-- its typed binary metadata (protos/switchboard/router/v1/answer_metadata.proto, read here by
-- field number) Server-Timing and OpenAI's x-ratelimit-* headers. It runs after errors.lua in
-- the same chunk (its locals unbase64, fields and field are in scope).

local TIMING_KEY = "switchboard-timing-bin"  -- AnswerTiming
local RATE_LIMITS_KEY = "switchboard-rate-limits-bin"  -- RateLimits
local RATE_KINDS = {{1, "requests"}, {2, "tokens"}}  -- RateLimits' field numbers and OpenAI's names
-- The Router's names (services/common/providers.py, services/router/request_ids.py), REST's, the
-- access log's (this filter's dynamic metadata), and whether a provider's request id header of the
-- REST name is joined after ours (a request id) or dropped (the provider that served is ours to say).
local NAMES = {
  {"switchboard-provider", "x-inference-provider", "provider", false},
  {"switchboard-request-id", "x-request-id", "request_id", true},
}

-- A field's value when it has the type its schema gives it (a message's bytes, a varint's
-- number), else the default: malformed metadata never raises here.
local function typed(value, kind, default)
  if type(value) == kind then
    return value
  end
  return default
end

-- OpenAI's form of a rate's reset time: "250ms", "6s", "1m0s".
function reset_duration(millis)
  if millis < 1000 then
    return string.format("%d", math.ceil(millis)) .. "ms"
  end
  local seconds = math.ceil(millis / 1000)
  if seconds >= 60 then
    return string.format("%dm%ds", floor(seconds / 60), seconds % 60)
  end
  return string.format("%ds", seconds)
end

-- Server-Timing's value of a base64 AnswerTiming; nil when it is none.
function server_timing(encoded)
  local timing = fields(unbase64(encoded))
  if timing == nil then
    return nil
  end
  return string.format("router;dur=%.2f, upstream;dur=%.2f", typed(field(timing, 1), "number", 0) / 1000,
    typed(field(timing, 2), "number", 0) / 1000)
end

-- OpenAI's x-ratelimit-* headers of a base64 RateLimits, as {name, value} pairs.
function rate_limit_headers(encoded)
  local found, rates = {}, fields(unbase64(encoded)) or {}
  for _, kind in ipairs(RATE_KINDS) do
    local state = fields(typed(field(rates, kind[1]), "string", ""))
    if state ~= nil and #state > 0 then
      local name = kind[2]
      found[#found + 1] = {"x-ratelimit-limit-" .. name, string.format("%d", typed(field(state, 1), "number", 0))}
      found[#found + 1] = {"x-ratelimit-remaining-" .. name, string.format("%d", typed(field(state, 2), "number", 0))}
      found[#found + 1] = {"x-ratelimit-reset-" .. name, reset_duration(typed(field(state, 3), "number", 0))}
    end
  end
  return found
end

-- Renames the Router's metadata `own` to the REST header `rest`. A provider's request id header
-- of the same name (its own, passed on) follows the Router's value when `join`, joined as Envoy
-- joins values; else ours replaces it.
local function present_name(headers, own, rest, join)
  local value = headers:get(own)
  if value == nil then
    return
  end
  headers:remove(own)
  local providers = headers:get(rest)
  if join and providers ~= nil then
    value = value .. "," .. providers
  end
  headers:replace(rest, value)
end

-- A REST call's unary answer carries the Router's metadata in its trailers (they leave the Router
-- with the answer in one write, services/router/servicer.py _serve_unary): they arrive after the
-- answer's body, which is held until then, and become headers here, before presentation. A
-- stream's come first, among its headers; an answer that ends with its headers (an error) has no
-- body and no trailers, and Envoy's own replies none of ours. Returns the answer's headers, live
-- after the wait.
function take_trailed_metadata(handle, headers)
  if headers:get(NAMES[2][1]) ~= nil or headers:get(UPSTREAM_TIME) == nil or handle:body() == nil then
    return headers
  end
  local trailers = handle:trailers()
  headers = handle:headers()  -- the wrapper held across the wait is dead
  if trailers == nil then
    return headers
  end
  local moved = nil
  for name, value in pairs(trailers) do
    if sub(name, 1, 5) ~= "grpc-" then
      headers:add(name, value)
      moved = moved or {}
      moved[#moved + 1] = name
    end
  end
  for _, name in ipairs(moved or {}) do
    trailers:remove(name)
  end
  return headers
end

-- Keeps the Router's own values for the access log, as the ledger has them: a REST answer's header
-- may join a provider's value after ours. The first Lua filter to see the answer records them.
function log_router_values(handle, headers)
  local marks = nil
  for _, names in ipairs(NAMES) do
    local value = headers:get(names[1])
    if value ~= nil then
      marks = marks or handle:streamInfo():dynamicMetadata()
      marks:set(MARKS, names[3], value)
    end
  end
end

-- Replaces the Router's metadata among a REST answer's headers by the REST headers.
function present_answer(headers)
  for _, names in ipairs(NAMES) do
    present_name(headers, names[1], names[2], names[4])
  end
  local timing = headers:get(TIMING_KEY)
  if timing ~= nil then
    headers:remove(TIMING_KEY)
    local value = server_timing(timing)
    if value ~= nil then
      headers:replace("server-timing", value)
    end
  end
  local rates = headers:get(RATE_LIMITS_KEY)
  if rates ~= nil then
    headers:remove(RATE_LIMITS_KEY)
    for _, pair in ipairs(rate_limit_headers(rates)) do
      headers:replace(pair[1], pair[2])
    end
  end
end
