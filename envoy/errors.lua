-- Shapes REST answers of transcoded calls. A gRPC error becomes OpenAI's error
-- shape (Anthropic's on the Messages route): the services end every call alike,
-- with a google.rpc.Status in grpc-status-details-bin (ErrorInfo, BadRequest), and
-- this filter turns it into the HTTP status and body from the error table that
-- scripts/generate.py writes from services/common/errors.py (gen/error_faces.lua,
-- prepended: ERROR_CODES, ERROR_REASONS, ANTHROPIC_FACES, PROVIDER_CODE_KEY).
-- gRPC's own headers are dropped from REST answers. Native gRPC calls pass untouched.
-- Envoy's routes send gRPC content types only to gRPC methods; gRPC-Web, which
-- nothing here speaks, is refused.

local find, sub, gsub = string.find, string.sub, string.gsub
local byte, char, floor = string.byte, string.char, math.floor
local MAX_ECHO = 64
local MARKS = "switchboard"  -- the dynamic metadata namespace of this filter's marks (and the access log's)
-- Envoy's router writes it on every answer that came from a service, never on a reply of its own.
local UPSTREAM_TIME = "x-envoy-upstream-service-time"

-- Caller input is echoed as a short prefix of plain characters: valid JSON as it is.
function echo(text)
  return (gsub(sub(text, 1, MAX_ECHO), "[^%w_%.%-]", "?"))
end

-- Anthropic's Messages route (plain or per provider) answers in Anthropic's shape
-- (services/common/errors.py, ANTHROPIC_PATH_REGEX).
local function anthropic_route(path)
  local bare = sub(path, 1, (find(path, "?", 1, true) or 0) - 1) .. "/"
  return find(bare, "^/v1/messages/") ~= nil or find(bare, "^/[^/]+/v1/messages/") ~= nil
end

local function now_us(handle)
  return tonumber(handle:timestampString(EnvoyTimestampResolution.MICROSECOND))
end

-- Marks when a filter that may refuse began looking at the request: Server-Timing's
-- "edge" entry of a refusal is the edge's own time from then (not the caller's upload, nor
-- the refusal delay of an over-budget request).
function edge_began(handle)
  handle:streamInfo():dynamicMetadata():set(MARKS, "began_us", now_us(handle))
end

local function edge_timing(handle, marks)
  local now = now_us(handle)
  return string.format("edge;dur=%.2f", (now - (marks["began_us"] or now)) / 1000)
end

-- Answers in OpenAI's shape (Anthropic's on its route; type invalid_request_error unless
-- given); the local reply mappers leave a reply marked own_reply alone.
function reject(handle, status, code, message, param, error_type)
  local marks = handle:streamInfo():dynamicMetadata()
  marks:set(MARKS, "own_reply", true)
  local timing = edge_timing(handle, marks:get(MARKS))
  local kind = error_type or "invalid_request_error"
  local body = '{"error":{"message":"' .. message .. '","type":"' .. kind .. '","param":'
    .. (param and '"' .. param .. '"' or "null") .. ',"code":"' .. code .. '"}}'
  if anthropic_route(handle:headers():get(":path") or "") then
    local face = ANTHROPIC_FACES[status]
    if face ~= nil then
      status, kind = face[1], face[2]
    end
    body = '{"type":"error","error":{"type":"' .. kind .. '","message":"' .. message .. '"}}'
  end
  local answer = {[":status"] = tostring(status), ["content-type"] = "application/json", ["server-timing"] = timing}
  handle:respond(answer, body)
end

-- Anthropic's status and error type for an HTTP status.
local function anthropic_face(status)
  local face = ANTHROPIC_FACES[status]
  if face == nil then
    return status, "api_error"
  end
  return face[1], face[2]
end

-- Marks a REST call: the caller's method for the access log (the transcoder makes every
-- call a POST), and whether its errors take Anthropic's shape.
function mark_rest(handle, headers, path)
  -- A unary answer's metadata in its trailers, with the answer in one write (answers.lua presents it).
  headers:replace("switchboard-answer-metadata", "trailers")
  local marks = handle:streamInfo():dynamicMetadata()
  marks:set(MARKS, "method", headers:get(":method"))
  if find(path, "/v1/messages", 1, true) and anthropic_route(path) then
    marks:set(MARKS, "anthropic", true)
  end
end

-- --- google.rpc.Status, from grpc-status-details-bin -------------------------

local BASE64 = {}
for i = 1, 64 do
  BASE64[byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", i)] = i - 1
end

-- The bytes of base64 text (padded or not).
local function unbase64(text)
  local out, bits, count = {}, 0, 0
  for i = 1, #text do
    local value = BASE64[byte(text, i)]
    if value ~= nil then
      bits, count = bits * 64 + value, count + 6
      if count >= 8 then
        count = count - 8
        local scale = 2 ^ count
        local octet = floor(bits / scale)
        out[#out + 1] = char(octet)
        bits = bits - octet * scale
      end
    end
  end
  return table.concat(out)
end

local function varint(data, at)
  local value, scale = 0, 1
  while true do
    local b = byte(data, at)
    if b == nil then
      return nil, at
    end
    at = at + 1
    value = value + (b % 128) * scale
    if b < 128 then
      return value, at
    end
    scale = scale * 128
  end
end

-- A message's fields as {number, value}: varints as numbers, length-delimited fields as
-- strings (fixed-size fields are skipped); nil when the bytes are not a message.
local function fields(data)
  local out, at = {}, 1
  while at <= #data do
    local key, value
    key, at = varint(data, at)
    if key == nil then
      return nil
    end
    local wire = key % 8
    if wire == 0 then
      value, at = varint(data, at)
    elseif wire == 2 then
      local length
      length, at = varint(data, at)
      if length == nil or at + length - 1 > #data then
        return nil
      end
      value, at = sub(data, at, at + length - 1), at + length
    elseif wire == 1 or wire == 5 then
      at = at + (wire == 1 and 8 or 4)
    else
      return nil
    end
    if value ~= nil then
      out[#out + 1] = {floor(key / 8), value}
    end
  end
  return out
end

local function field(message, number)
  for _, f in ipairs(message) do
    if f[1] == number then
      return f[2]
    end
  end
  return nil
end

local DETAIL = "type.googleapis.com/google.rpc."

-- What the error table needs of a google.rpc.Status: {code, message, reason, param,
-- metadata, retry_seconds}; nil when it is none.
local function decode_status(data)
  local status = fields(data)
  if status == nil then
    return nil
  end
  local failure = {code = field(status, 1) or 0, message = field(status, 2) or "", metadata = {}}
  for _, f in ipairs(status) do
    local any = f[1] == 3 and fields(f[2])
    local kind, value = any and field(any, 1), any and fields(field(any, 2) or "")
    if value and kind == DETAIL .. "ErrorInfo" then
      failure.reason = field(value, 1)
      for _, entry in ipairs(value) do
        local pair = entry[1] == 3 and fields(entry[2])
        if pair then
          failure.metadata[field(pair, 1) or ""] = field(pair, 2)
        end
      end
    elseif value and kind == DETAIL .. "BadRequest" and failure.param == nil then
      local violation = fields(field(value, 1) or "")
      failure.param = violation and field(violation, 1)
    elseif value and kind == DETAIL .. "RetryInfo" then
      local delay = fields(field(value, 1) or "") or {}
      local seconds = field(delay, 1) or 0
      if (field(delay, 2) or 0) > 0 then
        seconds = seconds + 1  -- a part of a second: Retry-After counts whole seconds
      end
      failure.retry_seconds = math.max(1, seconds)
    end
  end
  return failure
end

local function json_string(text)
  return '"' .. gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", byte(c)) end) .. '"'
end

-- The HTTP status and body of an error: OpenAI's shape, or Anthropic's.
local function error_answer(failure, anthropic)
  local face = ERROR_REASONS[failure.code .. ":" .. (failure.reason or "")] or ERROR_CODES[failure.code]
    or ERROR_CODES[2]
  local status, message = face[1], json_string(failure.message)
  if anthropic then
    local kind
    status, kind = anthropic_face(status)
    return status, '{"type":"error","error":{"type":"' .. kind .. '","message":' .. message .. "}}"
  end
  local code = failure.metadata[PROVIDER_CODE_KEY] or string.lower(failure.reason or "")
  local param = failure.param and json_string(failure.param) or "null"
  return status, '{"error":{"message":' .. message .. ',"type":"' .. face[2] .. '","param":' .. param
    .. ',"code":' .. json_string(code) .. "}}"
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if find(content_type, "application/grpc", 1, true) == 1 then
    if find(content_type, "application/grpc-web", 1, true) == 1 then
      -- Envoy would answer a gRPC-Web caller in gRPC's framing: answer plain JSON instead.
      headers:replace("content-type", "application/json")
      reject(handle, 415, "unsupported_content_type", "gRPC-Web is not supported: use gRPC or the REST paths", nil)
      return
    end
    local marks = handle:streamInfo():dynamicMetadata()
    marks:set(MARKS, "native_grpc", true)
    marks:set(MARKS, "method", "POST")
    return
  end
  edge_began(handle)
  mark_rest(handle, headers, headers:get(":path") or "")
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local marks = handle:streamInfo():dynamicMetadata():get(MARKS)
  if marks ~= nil and marks["native_grpc"] then
    log_router_values(handle, router_names(headers))
    return
  end
  local own
  headers, own = answer_metadata(handle, headers)
  log_router_values(handle, own)
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  present_answer(headers, own)
  if headers:get("server-timing") == nil and headers:get(UPSTREAM_TIME) == nil then
    -- Envoy's own reply (a route's 404, the transcoder's 400, a 408, an unreachable service's 503):
    -- the edge's time, as on the refusals made here.
    headers:replace("server-timing", edge_timing(handle, marks or {}))
  end
  local details = headers:get("grpc-status-details-bin")
  if details == nil then
    return
  end
  headers:remove("grpc-status-details-bin")
  local failure = decode_status(unbase64(details))
  if failure == nil or failure.code == 0 then
    return
  end
  local status, body = error_answer(failure, marks ~= nil and marks["anthropic"])
  headers:replace(":status", tostring(status))
  headers:replace("content-type", "application/json")
  if failure.retry_seconds then
    headers:replace("retry-after", tostring(failure.retry_seconds))
  end
  handle:body(true):setBytes(body)
end
