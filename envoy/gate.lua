-- The gate, before the buffer filter: a request that declares a body larger than
-- SMALL_BODY_BYTES, or one of unknown length, is let on to be buffered only with a
-- bearer token the Registry knows (its GetMe, over gRPC); a bad or missing token is
-- a 401 before the body is read, and a declared body over the route's cap a 413.
-- Small bodies pass untouched (the hot path): the services check their tokens.
-- A request the budgets marked (OVER_BUDGET_HEADER, after the refusal delay) is a 429 first.
-- Route metadata (edge/limits.py): max_body, and anonymous on the routes
-- that serve callers without a token in anonymous mode.

local BODY_METHODS = {POST = true, PUT = true, PATCH = true}
-- An empty GetMeRequest as one gRPC message: no compression flag, length 0.
local EMPTY_MESSAGE = "\0\0\0\0\0"
local UNAUTHENTICATED = "16"

-- Whether a key has the shape of the tokens the Registry issues (TOKEN_PREFIXES).
local function switchboard_token(key)
  for _, prefix in ipairs(TOKEN_PREFIXES) do
    if sub(key, 1, #prefix) == prefix then
      return true
    end
  end
  return false
end

local function declared_length(headers)
  local text = headers:get("content-length")
  if text == nil then
    return nil
  end
  return tonumber(text)
end

local function unauthorized(handle, message)
  reject(handle, 401, "invalid_api_key", message, nil, "authentication_error")
end

-- Whether the Registry refuses the token; an answer it could not give lets the request on.
local function refused(handle, authorization)
  local headers, _ = handle:httpCall(REGISTRY_CLUSTER, {
    [":method"] = "POST",
    [":path"] = "/switchboard.registry.v1.AccountService/GetMe",
    [":authority"] = REGISTRY_CLUSTER,
    ["content-type"] = "application/grpc",
    ["te"] = "trailers",
    ["authorization"] = authorization,
  }, EMPTY_MESSAGE, GATE_TIMEOUT_MS)
  return headers ~= nil and headers["grpc-status"] == UNAUTHENTICATED
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get(OVER_BUDGET_HEADER) ~= nil then
    handle:streamInfo():dynamicMetadata():set("switchboard", "over_budget", true)
    reject(handle, 429, "rate_limited", BUDGET_MESSAGE, nil, "rate_limit_error")
    return
  end
  local length = declared_length(headers)
  if length ~= nil and length <= SMALL_BODY_BYTES then
    return
  end
  if length == nil and not BODY_METHODS[headers:get(":method")] then
    return
  end
  local content_type = headers:get("content-type") or ""
  if find(content_type, "application/grpc", 1, true) == 1 then
    return -- native gRPC: never buffered, flow control holds a slow sender
  end
  edge_began(handle)
  local route = handle:metadata()
  local cap = route:get("max_body")
  if length ~= nil and cap ~= nil and length > cap then
    reject(handle, 413, "body_too_large", "the request body is larger than this route's cap of " .. cap .. " bytes", nil)
    return
  end
  local authorization = headers:get("authorization")
  local api_key = headers:get("x-api-key")
  if authorization == nil and api_key ~= nil then
    authorization = "Bearer " .. api_key -- Anthropic's clients send the key so, wherever Bearer goes
  end
  if authorization == nil then
    if not route:get("anonymous") then
      unauthorized(handle, "a request body this large needs an API key: send 'Authorization: Bearer <token>'")
    end
    return
  end
  local _, key_start = find(authorization, "^[Bb][Ee][Aa][Rr][Ee][Rr] +")
  if key_start == nil or key_start == #authorization then
    unauthorized(handle, "the Authorization header must be 'Bearer <token>'")
  elseif route:get("anonymous") and not switchboard_token(sub(authorization, key_start + 1)) then
    return -- in anonymous mode a key of another shape is a placeholder: no key (the Router decides)
  elseif refused(handle, authorization) then
    unauthorized(handle, "invalid API key")
  end
end

-- errors.lua's answer shaping is not this filter's: without a response function Envoy skips the
-- answer here entirely (an empty one would still run a Lua coroutine per answer).
envoy_on_response = nil
