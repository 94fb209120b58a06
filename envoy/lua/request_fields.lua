-- Refuses REST request bodies with JSON fields the API does not know (a misspelled "reply_too"
-- would otherwise be dropped by the transcoder and the email sent without a Reply-To).
-- The known fields come from request_schema.lua, generated from proto/ by scripts/gen_proto.py.
-- JSON parsing: dkjson 2.6 (envoy/lua/dkjson.lua, vendored unchanged from its release).
local json = require("dkjson")
local schema = require("request_schema")

local M = {}

local function is_array(value)
  local meta = getmetatable(value)
  if meta ~= nil and meta.__jsontype ~= nil then
    return meta.__jsontype == "array"
  end
  return value[1] ~= nil
end

-- Appends the path of every unknown field under `value` (a decoded `message`) to `out`.
local function check(value, message, prefix, out)
  if type(value) ~= "table" or is_array(value) then
    return -- a wrong type: the transcoder answers 400 for it
  end
  local fields = schema.messages[message]
  if fields == nil then
    return
  end
  for key, item in pairs(value) do
    if type(key) == "string" then
      local field = fields[key]
      local path = prefix .. key
      if field == nil then
        out[#out + 1] = path
      elseif field.message ~= "" and type(item) == "table" then
        if field.map then
          for map_key, map_value in pairs(item) do
            check(map_value, field.message, path .. "[\"" .. tostring(map_key) .. "\"].", out)
          end
        elseif is_array(item) then
          for index, element in ipairs(item) do
            check(element, field.message, path .. "[" .. (index - 1) .. "].", out)
          end
        else
          check(item, field.message, path .. ".", out)
        end
      end
    end
  end
end

-- The request message of a REST call with a body, or nil.
function M.message_for(method, path)
  path = string.gsub(path, "%?.*$", "")
  for _, route in ipairs(schema.routes) do
    if route.method == method and string.match(path, route.path) then
      return route.message
    end
  end
  return nil
end

-- The sorted unknown field paths of a JSON body, or nil when it is not a JSON object.
function M.unknown_fields(message, text)
  local decoded, _, err = json.decode(text, 1, nil)
  if err ~= nil or type(decoded) ~= "table" then
    return nil
  end
  local out = {}
  check(decoded, message, "", out)
  table.sort(out)
  return out
end

-- The 400 body: a google.rpc.Status with a BadRequest naming each field, as the API's own
-- validation errors read through the transcoder.
function M.error_body(unknown)
  local violations = {}
  for index, field in ipairs(unknown) do
    violations[index] = {field = field, description = "unknown field"}
  end
  return json.encode({
    code = 3,
    message = "unknown field(s): " .. table.concat(unknown, ", "),
    details = {{
      ["@type"] = "type.googleapis.com/google.rpc.BadRequest",
      fieldViolations = violations,
    }},
  })
end

function M.on_request(handle)
  local headers = handle:headers()
  local message = M.message_for(headers:get(":method") or "", headers:get(":path") or "")
  if message == nil then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local unknown = M.unknown_fields(message, body:getBytes(0, body:length()))
  if unknown == nil or #unknown == 0 then
    return
  end
  -- Envoy's local_reply_config would wrap this body in another {"code":3,"message":...}; its
  -- first mapper keeps the body when this metadata is set (envoy/envoy.yaml). Not a request
  -- header: headers are read-only once the body has been read.
  handle:streamInfo():dynamicMetadata():set("mailroom.request_fields", "json_body", true)
  handle:respond({[":status"] = "400", ["content-type"] = "application/json"}, M.error_body(unknown))
end

return M
