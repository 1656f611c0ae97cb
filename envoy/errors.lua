-- Shapes REST answers of transcoded calls. A gRPC error becomes OpenAI's
-- error shape: on a call marked as REST (the x-switchboard-method request
-- header, which Envoy strips from callers), the service puts the finished JSON
-- body and the HTTP status into the x-switchboard-error and
-- x-switchboard-status trailers. gRPC's own headers are dropped from REST
-- answers. Native gRPC calls pass untouched.
-- Envoy's routes send gRPC content types only to gRPC methods; gRPC-Web, which
-- nothing here speaks, is refused.

local find, sub, gsub = string.find, string.sub, string.gsub
local MAX_ECHO = 64

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

-- Answers in OpenAI's shape (Anthropic's on its route; type invalid_request_error unless
-- given); the local reply mappers leave a reply marked own_reply alone.
function reject(handle, status, code, message, param, error_type)
  handle:streamInfo():dynamicMetadata():set("switchboard", "own_reply", true)
  local kind = error_type or "invalid_request_error"
  local body = '{"error":{"message":"' .. message .. '","type":"' .. kind .. '","param":'
    .. (param and '"' .. param .. '"' or "null") .. ',"code":"' .. code .. '"}}'
  if anthropic_route(handle:headers():get(":path") or "") then
    kind = ANTHROPIC_TYPES and ANTHROPIC_TYPES[status] or kind
    body = '{"type":"error","error":{"type":"' .. kind .. '","message":"' .. message .. '"}}'
  end
  handle:respond({[":status"] = tostring(status), ["content-type"] = "application/json"}, body)
end

-- gRPC refuses a metadata key outside [0-9a-z_.-] and would fail the whole call: such
-- request headers (legal in HTTP, e.g. "a+b!") are dropped before they reach a service.
function drop_unfit_headers(headers)
  local unfit = nil
  for name, _ in pairs(headers) do
    if sub(name, 1, 1) ~= ":" and find(name, "[^0-9a-z_%.%-]") then
      unfit = unfit or {}
      unfit[#unfit + 1] = name
    end
  end
  if unfit ~= nil then
    for _, name in ipairs(unfit) do
      headers:remove(name)
    end
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_unfit_headers(headers)
  local content_type = headers:get("content-type") or ""
  if find(content_type, "application/grpc", 1, true) == 1 then
    if find(content_type, "application/grpc-web", 1, true) == 1 then
      -- Envoy would answer a gRPC-Web caller in gRPC's framing: answer plain JSON instead.
      headers:replace("content-type", "application/json")
      reject(handle, 415, "unsupported_content_type", "gRPC-Web is not supported: use gRPC or the REST paths", nil)
      return
    end
    handle:streamInfo():dynamicMetadata():set("switchboard", "native_grpc", true)
    return
  end
  -- Marks the call as REST (as strict.lua does): only then do the services add the
  -- x-switchboard-error/-status trailers, so native gRPC callers never see them.
  headers:replace("x-switchboard-method", headers:get(":method"))
end

function envoy_on_response(handle)
  local marks = handle:streamInfo():dynamicMetadata():get("switchboard")
  if marks ~= nil and marks["native_grpc"] then
    return
  end
  local headers = handle:headers()
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
  local error_body = headers:get("x-switchboard-error")
  if error_body == nil then
    return
  end
  headers:remove("x-switchboard-error")
  local status = headers:get("x-switchboard-status")
  headers:remove("x-switchboard-status")
  if status ~= nil then
    headers:replace(":status", status)
  end
  headers:replace("content-type", "application/json")
  handle:body(true):setBytes(error_body)
end
