-- wrk script for bench/run.py: one scenario per run, unique event ids, per-request latency.
--
-- wrk -s bench/wrk/load.lua URL -- MODE PREFIX PATH OUT [API_KEY]
--   MODE      show | single | batch
--   PREFIX    unique per wrk run; event ids are PREFIX-<thread>-<counter>[-<index>]
--   PATH      request path (the topic is part of it; show appends ?id=<event id>)
--   OUT       done() writes OUT.ids (every id the server answered 2xx for) and OUT.samples
--             (one line per answer: completion time us, status, latency us or -1)
--   API_KEY   sent as X-Api-Key when given
-- done() also prints "BENCH ..." lines (wrk's exact totals and percentiles) for bench/loadgen.py.
--
-- Per-request latency: a connection never has two requests in flight, but wrk does not tell
-- the script which connection answers, so each request is keyed by its (unique) first event id,
-- which every 2xx answer lists: the time from request() to response() of the same id. Answers
-- without ids (errors) count in wrk's histogram but have no per-request latency here.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

local BATCH_SIZE = 100
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  mode, prefix, path, out = args[1], args[2], args[3], args[4]
  counter = 0
  statuses = {}
  accepted = {}
  samples = {}
  sent_at = {}
  thread_prefix = prefix .. "-" .. thread_number .. "-"
  headers = {}
  if mode ~= "show" then
    headers["Content-Type"] = "application/json"
  end
  if args[5] and args[5] ~= "" then
    headers["X-Api-Key"] = args[5]
  end
end

-- About 200 bytes of JSON: a realistic page-view event with a unique id.
local function event(id)
  return '{"id":"' .. id .. '","key":"user-' .. (counter % 97)
    .. '","type":"page_view","page":"/products/shoes/item-1234","ref":"/search?q=run"'
    .. ',"ts":1764316800123,"ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
end

function request()
  counter = counter + 1
  local id = thread_prefix .. counter
  local formatted
  if mode == "show" then
    -- The seed's tiny tracking-pixel GET; the query carries only the event id.
    formatted = wrk.format("GET", path .. "?id=" .. id, headers)
  elseif mode == "batch" then
    local events = {}
    for index = 1, BATCH_SIZE do
      events[index] = event(id .. "-" .. index)
    end
    formatted = wrk.format("POST", path, headers, '{"events":[' .. table.concat(events, ",") .. "]}")
    id = id .. "-1"
  else
    formatted = wrk.format("POST", path, headers, event(id))
  end
  sent_at[id] = now_us()
  return formatted
end

function response(status, headers, body)
  local now = now_us()
  statuses[status] = (statuses[status] or 0) + 1
  local latency = -1
  if status >= 200 and status < 300 then
    -- Record the ids the server itself says it accepted, so the Kafka check is exact.
    local ids = body:match('"ids":%s*%[(.-)%]')
    if ids then
      local first = true
      for id in ids:gmatch('"([^"]+)"') do
        accepted[#accepted + 1] = id
        if first and sent_at[id] then
          latency = now - sent_at[id]
          sent_at[id] = nil
        end
        first = false
      end
    end
  end
  samples[#samples + 1] = now .. " " .. status .. " " .. latency
end

function done(summary, latency, requests)
  local errors = summary.errors
  print(string.format("BENCH duration_us %d", summary.duration))
  print(string.format("BENCH requests %d", summary.requests))
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
  local out = threads[1]:get("out")
  local ids_file = assert(io.open(out .. ".ids", "w"))
  local samples_file = assert(io.open(out .. ".samples", "w"))
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
    for _, id in ipairs(thread:get("accepted")) do
      ids_file:write(id, "\n")
    end
    for _, sample in ipairs(thread:get("samples")) do
      samples_file:write(sample, "\n")
    end
  end
  ids_file:close()
  samples_file:close()
  for status, count in pairs(total) do
    print(string.format("BENCH status %d %d", status, count))
  end
end
