-- Acquire+release pairs for wrk: each connection alternates POST /timers and
-- POST /timers/release on a scope of its own, for one live worker pid.
-- The pids come from the environment (BENCH_PIDS, comma-separated).
local pids = {}
for pid in string.gmatch(os.getenv("BENCH_PIDS") or "", "%d+") do
  table.insert(pids, pid)
end
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  requests_made = 0
  pid = pids[(thread_id - 1) % #pids + 1]
end

function request()
  requests_made = requests_made + 1
  local pair = math.floor((requests_made - 1) / 2)
  local scope = string.format("wrk-%d-%d", thread_id, pair % 64)
  if requests_made % 2 == 1 then
    local body = string.format('{"pid": %s, "scope_id": "%s", "expires_in": 60}', pid, scope)
    return wrk.format("POST", "/timers", headers, body)
  end
  local body = string.format('{"pid": %s, "scope_id": "%s"}', pid, scope)
  return wrk.format("POST", "/timers/release", headers, body)
end

function response(status, headers, body)
  if status ~= 200 and status ~= 201 then
    errors_seen = (errors_seen or 0) + 1
  end
end
