-- Shapes REST answers of transcoded calls. A gRPC error becomes OpenAI's
-- error shape: the service puts the finished JSON body and the HTTP status
-- into the x-switchboard-error and x-switchboard-status trailers. gRPC's own
-- headers are dropped from REST answers. Native gRPC calls pass untouched.
function envoy_on_request(handle)
  local content_type = handle:headers():get("content-type") or ""
  if string.find(content_type, "application/grpc", 1, true) == 1 then
    handle:streamInfo():dynamicMetadata():set("switchboard", "native_grpc", true)
  end
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
