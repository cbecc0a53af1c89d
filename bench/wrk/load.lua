-- wrk script for bench/run.py: one scenario per run, unique event ids, exact per-status counts.
--
-- wrk -s bench/wrk/load.lua URL -- MODE PREFIX PATH IDS_FILE APDEX_US [API_KEY]
--   MODE      show | single | batch
--   PREFIX    unique per wrk run; event ids are PREFIX-<thread>-<counter>[-<index>]
--   PATH      request path (the topic is part of it)
--   IDS_FILE  done() writes every id the server answered 2xx for, one per line
--   APDEX_US  APDEX threshold T in microseconds
--   API_KEY   sent as X-Api-Key when given
-- done() prints "BENCH ..." lines that bench/loadgen.py parses.

local BATCH_SIZE = 100
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  mode, prefix, path, ids_file, apdex_us = args[1], args[2], args[3], args[4], tonumber(args[5])
  counter = 0
  statuses = {}
  accepted = {}
  thread_prefix = prefix .. "-" .. thread_number .. "-"
  post_headers = { ["Content-Type"] = "application/json" }
  get_headers = {}
  if args[6] and args[6] ~= "" then
    post_headers["X-Api-Key"] = args[6]
    get_headers["X-Api-Key"] = args[6]
  end
  if mode == "show" then
    -- The seed's tiny tracking-pixel GET: the gateway gives the event its id and answers it.
    static_request = wrk.format("GET", path, get_headers)
  end
end

-- About 200 bytes of JSON: a realistic page-view event with a unique id.
local function event(id)
  return '{"id":"' .. id .. '","key":"user-' .. (counter % 97)
    .. '","type":"page_view","page":"/products/shoes/item-1234","ref":"/search?q=run"'
    .. ',"ts":1764316800123,"ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
end

function request()
  if static_request then
    return static_request
  end
  counter = counter + 1
  local id = thread_prefix .. counter
  local body
  if mode == "batch" then
    local events = {}
    for index = 1, BATCH_SIZE do
      events[index] = event(id .. "-" .. index)
    end
    body = '{"events":[' .. table.concat(events, ",") .. "]}"
  else
    body = event(id)
  end
  return wrk.format("POST", path, post_headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 then
    -- Record the ids the server itself says it accepted, so the Kafka check is exact.
    local ids = body:match('"ids":%s*%[(.-)%]')
    if ids then
      for id in ids:gmatch('"([^"]+)"') do
        accepted[#accepted + 1] = id
      end
    end
  end
end

-- Fraction of latencies <= limit, by bisection over wrk's exact histogram.
local function fraction_at_most(latency, limit)
  if latency.min > limit then
    return 0
  end
  if latency.max <= limit then
    return 1
  end
  local low, high = 0, 100
  for _ = 1, 30 do
    local middle = (low + high) / 2
    if latency:percentile(middle) <= limit then
      low = middle
    else
      high = middle
    end
  end
  return low / 100
end

function done(summary, latency, requests)
  local errors = summary.errors
  print(string.format("BENCH duration_us %d", summary.duration))
  print(string.format("BENCH requests %d", summary.requests))
  print(string.format("BENCH bytes %d", summary.bytes))
  print(string.format("BENCH socket_errors %d %d %d %d", errors.connect, errors.read,
    errors.write, errors.timeout))
  print(string.format("BENCH latency_min_us %d", latency.min))
  print(string.format("BENCH latency_max_us %d", latency.max))
  print(string.format("BENCH latency_mean_us %f", latency.mean))
  for p = 1, 99 do
    print(string.format("BENCH pct %g %d", p, latency:percentile(p)))
  end
  for _, p in ipairs({ 99.25, 99.5, 99.75, 99.9, 99.95, 99.99 }) do
    print(string.format("BENCH pct %g %d", p, latency:percentile(p)))
  end
  local limit = threads[1]:get("apdex_us")
  print(string.format("BENCH apdex_le_t %.6f", fraction_at_most(latency, limit)))
  print(string.format("BENCH apdex_le_4t %.6f", fraction_at_most(latency, 4 * limit)))
  local file = assert(io.open(threads[1]:get("ids_file"), "w"))
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
    for _, id in ipairs(thread:get("accepted")) do
      file:write(id, "\n")
    end
  end
  file:close()
  for status, count in pairs(total) do
    print(string.format("BENCH status %d %d", status, count))
  end
end
