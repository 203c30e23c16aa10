-- wrk script for `make bench`: every request carries `Authorization: Bearer <token>`,
-- cycling through a token file (one token per line):
--   wrk ... -s bench/tokens.lua http://127.0.0.1:PORT/ -- bench/out/tokens/es256-many.txt
-- Requests are formatted once in init(), so wrk's per-request cost is one table lookup,
-- the same for one token and for thousands.

local requests = {}
local count = 0
local next_i = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("tokens.lua: pass the token file after --")
  end
  local file = io.open(path, "r")
  if file == nil then
    error("tokens.lua: cannot open " .. path)
  end
  for line in file:lines() do
    local token = line:gsub("%s+$", "")
    if #token > 0 then
      count = count + 1
      requests[count] = wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. token })
    end
  end
  file:close()
  if count == 0 then
    error("tokens.lua: no token in " .. path)
  end
end

function request()
  next_i = next_i % count + 1
  return requests[next_i]
end
