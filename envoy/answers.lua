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

-- The Router's names a REST answer's presentation reads, as a set.
local OWN_KEYS = {[NAMES[1][1]] = true, [NAMES[2][1]] = true, [TIMING_KEY] = true, [RATE_LIMITS_KEY] = true}

-- The Router's metadata among a header map's entries, taken out of it: its values by name.
local function take_own(map)
  local own = {}
  for name, _ in pairs(OWN_KEYS) do
    local value = map:get(name)
    if value ~= nil then
      map:remove(name)
      own[name] = value
    end
  end
  return own
end

-- The REST answer's headers and the Router's metadata of the answer, taken out of them. A REST
-- call's unary answer carries it in its trailers (they leave the Router with the answer in one
-- write, services/router/servicer.py _serve_unary): they arrive after the answer's body, which is
-- held until then; a provider's request id header among them joins the headers. A stream's come
-- first, among its headers, and so do an error's (it ends with its headers: no body, no trailers);
-- Envoy's own replies carry none. The headers returned are live after the wait.
function answer_metadata(handle, headers)
  if headers:get(NAMES[2][1]) ~= nil or headers:get(UPSTREAM_TIME) == nil or handle:body() == nil then
    return headers, take_own(headers)
  end
  local trailers = handle:trailers()
  headers = handle:headers()  -- the wrapper held across the wait is dead
  if trailers == nil then
    return headers, {}
  end
  local own, taken = {}, {}
  for name, value in pairs(trailers) do
    if OWN_KEYS[name] then
      own[name] = value
      taken[#taken + 1] = name
    elseif sub(name, 1, 5) ~= "grpc-" then
      headers:add(name, value)
      taken[#taken + 1] = name
    end
  end
  for _, name in ipairs(taken) do
    trailers:remove(name)
  end
  return headers, own
end

-- The Router's provider and request id of an answer, by name, read from its headers (a native
-- gRPC answer's, passed on untouched).
function router_names(headers)
  return {[NAMES[1][1]] = headers:get(NAMES[1][1]), [NAMES[2][1]] = headers:get(NAMES[2][1])}
end

-- Keeps the Router's own values (`own`, by name) for the access log, as the ledger has them: a REST
-- answer's header may join a provider's value after ours. It asks for the stream's metadata itself:
-- a wrapper taken before answer_metadata's wait is dead after it.
function log_router_values(handle, own)
  local marks = nil
  for _, names in ipairs(NAMES) do
    local value = own[names[1]]
    if value ~= nil then
      marks = marks or handle:streamInfo():dynamicMetadata()
      marks:set(MARKS, names[3], value)
    end
  end
end

-- Presents the Router's metadata (`own`, its values by name; else taken from the headers) among a
-- REST answer's headers as the REST headers. A provider's request id header of a REST name (its
-- own, passed on) follows the Router's value when the name's `join` says so, joined as Envoy joins
-- values; else ours replaces it.
function present_answer(headers, own)
  own = own or take_own(headers)
  for _, names in ipairs(NAMES) do
    local value = own[names[1]]
    if value ~= nil then
      local providers = names[4] and headers:get(names[2])
      if providers then
        value = value .. "," .. providers
      end
      headers:replace(names[2], value)
    end
  end
  local timing = own[TIMING_KEY] and server_timing(own[TIMING_KEY])
  if timing ~= nil then
    headers:replace("server-timing", timing)
  end
  if own[RATE_LIMITS_KEY] ~= nil then
    for _, pair in ipairs(rate_limit_headers(own[RATE_LIMITS_KEY])) do
      headers:replace(pair[1], pair[2])
    end
  end
end
