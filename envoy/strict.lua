-- Checks requests on routes with a typed JSON body or path variables, before the
-- transcoder (which silently drops unknown JSON fields and lets the query string
-- set path fields). edge/envoy.py appends this to errors.lua (whose
-- envoy_on_response shapes answers) after the generated tables:
--   RULES[route's "rule" metadata] = {query = {name = field}, body = schema, partial = bool}
--   SCHEMAS[message] = {fields = {key = spec}, required = {{json_name, proto_name}},
--                       short = {key = true}: fields whose JSON value is no long string,
--                       bools = {key = true}: boolean fields}
--   spec: true (anything), a message name (its object), {map = spec} (any keys).
-- A body schema may add path = {key = true}: fields the path binds. The locals
-- find, sub, gsub, byte, char and the functions echo, reject and mark_rest come from errors.lua.

local MAX_DEPTH = 64

local function unescape(text)
  text = gsub(text, "%+", " ")
  return (gsub(text, "%%(%x%x)", function(hex) return char(tonumber(hex, 16)) end))
end

-- nil when every query parameter may be set, else (code, message, param).
local function check_query(path, names)
  local start = find(path, "?", 1, true)
  if start == nil then
    return nil
  end
  for pair in string.gmatch(sub(path, start + 1), "[^&]+") do
    local key = unescape(sub(pair, 1, (find(pair, "=", 1, true) or 0) - 1))
    local known = names[key] or names[sub(key, 1, (find(key, ".", 1, true) or 0) - 1)]
    if known == "path" then
      local param = echo(key)
      return "path_parameter_in_query", "path parameter " .. param .. " cannot be set in the query", param
    elseif known == nil then
      local param = echo(key)
      return "unknown_query_parameter", "unknown query parameter " .. param, param
    end
  end
  return nil
end

-- The schema of an object a spec describes (nil: any keys).
local function object_schema(spec)
  if type(spec) == "string" then
    return SCHEMAS[spec]
  end
  if type(spec) == "table" and spec.fields then
    return spec
  end
  return nil
end

local function key_path(stack, depth, key)
  local parts = {}
  for level = 2, depth do
    local above = stack[level].key  -- nil for an array's elements
    if above then
      parts[#parts + 1] = echo(above)
    end
  end
  parts[#parts + 1] = echo(key)
  return sub(table.concat(parts, "."), 1, 4 * MAX_ECHO)
end

-- Index of the quote that closes the string opened at `open`, or nil.
local function string_end(body, open)
  local at = open + 1
  while true do
    local stop = find(body, '["\\]', at)
    if stop == nil or byte(body, stop) == 34 then
      return stop
    end
    at = stop + 2
  end
end

-- The transcoder quotes a value it cannot convert in full: a literal (number,
-- true, ...) is never long, nor is a string given to a field that takes no long
-- string (a number, a message, ...).
local MAX_SHORT_VALUE = 256

local function check_value(body, at, short, stack, depth, key)
  local _, colon = find(body, "^%s*:%s*", at)
  if colon == nil then
    return nil
  end
  local first, stop = byte(body, colon + 1), nil
  if first == 34 then
    stop = short and string_end(body, colon + 1)
  elseif first ~= 123 and first ~= 91 then
    stop = find(body, "[,}%]]", colon + 1)
  end
  if stop and stop - colon > MAX_SHORT_VALUE then
    local param = key_path(stack, depth, key)
    return "invalid_value", "the value of " .. param .. " is not valid for its type", param
  end
  return nil
end

-- A boolean field takes the JSON literals only: the transcoder would also turn strings
-- such as "yes" or "0" into a boolean.
local function check_bool(body, at, stack, depth, key)
  if find(body, "^%s*:%s*true", at) or find(body, "^%s*:%s*false", at) or find(body, "^%s*:%s*null", at) then
    return nil
  end
  local param = key_path(stack, depth, key)
  return "invalid_value", "the value of " .. param .. " must be true or false", param
end

-- nil when the body's keys fit the schema, else (code, message, param). Jumps from
-- one structural character to the next; syntax errors are left to the transcoder.
local function check_body(body, root, partial)
  local stack, depth = {}, 0
  local frame = nil
  local next_spec = root  -- what the next value must be
  local expect_key = false
  local at = 1
  while true do
    local i = find(body, '[{}%[%]",]', at)
    if i == nil then
      break
    end
    local c = byte(body, i)
    at = i + 1
    if c == 34 then
      local close = string_end(body, i)
      if close == nil then
        return nil
      end
      at = close + 1
      if expect_key then
        expect_key = false
        local key = sub(body, i + 1, close - 1)
        frame.pending = key
        local schema = frame.schema
        if schema == nil then
          next_spec = frame.map
        else
          if schema.path and schema.path[key] then
            local param = key_path(stack, depth, key)
            return "path_parameter_in_body", "field " .. param .. " is set by the path, not the body", param
          end
          next_spec = schema.fields[key]
          if next_spec == nil then
            local param = key_path(stack, depth, key)
            return "unknown_field", "unknown field " .. param .. " in the request body", param
          end
          local code, message, param = check_value(body, at, schema.short[key], stack, depth, key)
          if code == nil and schema.bools[key] then
            code, message, param = check_bool(body, at, stack, depth, key)
          end
          if code then
            return code, message, param
          end
          if frame.seen and not find(body, "^%s*:%s*null", at) then
            frame.seen[key] = true
          end
        end
      end
    elseif c == 123 or c == 91 then
      depth = depth + 1
      if depth > MAX_DEPTH then
        return "nesting_too_deep", "the body nests deeper than " .. MAX_DEPTH .. " levels", nil
      end
      local key = frame and frame.pending or nil
      local schema = object_schema(next_spec)
      frame = {key = key, schema = schema, map = type(next_spec) == "table" and next_spec.map or true}
      if c == 123 then
        expect_key = true
        if schema and #schema.required > 0 and not partial then
          frame.seen = {}
        end
      else
        frame.array = next_spec
      end
      stack[depth] = frame
    elseif c == 125 or c == 93 then
      if frame == nil then
        return nil
      end
      if frame.seen then
        for _, names in ipairs(frame.schema.required) do
          if not frame.seen[names[1]] and not frame.seen[names[2]] then
            local param = key_path(stack, depth, names[1])
            return "missing_field", "missing required field " .. param, param
          end
        end
      end
      depth = depth - 1
      frame = stack[depth]
      expect_key = false
    elseif frame ~= nil then  -- a comma
      if frame.array ~= nil then
        next_spec = frame.array
      else
        expect_key = true
      end
    end
  end
  return nil
end

-- An empty body is an empty message: every required field is missing.
local function check_empty(root, partial)
  if partial then
    return nil
  end
  local names = root.required[1]
  if names then
    return "missing_field", "missing required field " .. names[1], names[1]
  end
  return nil
end

-- The hub's JavaScript client sends an array parameter as "name[]=value" (expand[]=...); the
-- transcoder reads repeated fields as "name=value". The path, rewritten so when it had any.
local function without_array_brackets(headers, path)
  local start = find(path, "?", 1, true)
  if start == nil or not (find(path, "[]=", start, true) or find(path, "%%5[Bb]%%5[Dd]=", start)) then
    return path
  end
  local query = gsub(sub(path, start + 1), "%[%]=", "=")
  query = gsub(query, "%%5[Bb]%%5[Dd]=", "=")
  path = sub(path, 1, start) .. query
  headers:replace(":path", path)
  return path
end

function envoy_on_request(handle)
  edge_began(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  if #path > MAX_PATH_BYTES then
    reject(handle, 414, "uri_too_long", "the path is longer than " .. MAX_PATH_BYTES .. " bytes", nil)
    return
  end
  mark_rest(handle, headers, path)
  local rule = RULES[handle:metadata():get("rule")]
  path = without_array_brackets(headers, path)
  local code, message, param = check_query(path, rule.query)
  if code then
    reject(handle, 400, code, message, param)
    return
  end
  if rule.body == nil then
    return
  end
  local buffer = handle:body()
  local body = buffer and buffer:getBytes(0, buffer:length()) or ""
  if find(body, "^%s*$") then
    code, message, param = check_empty(rule.body, rule.partial)
  else
    code, message, param = check_body(body, rule.body, rule.partial)
  end
  if code then
    reject(handle, 400, code, message, param)
  end
end

