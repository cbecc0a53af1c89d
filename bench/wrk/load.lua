-- wrk script for bench/run.py: one scenario per run, unique event ids, per-request latency.
--
-- wrk -s bench/wrk/load.lua URL -- MODE PREFIX PATH OUT [API_KEY]
--   MODE      show | single | batch: the native API;
--             segment | posthog | snowplow | confluent: a batch of 100 events in that client
--             protocol's body (Segment /v1/batch, PostHog /batch/, Snowplow tp2, Confluent REST
--             Proxy v2 JSON), the same page-view event in each
--   PREFIX    unique per wrk run; event ids are PREFIX-<thread>-<counter>[-<index>] (PostHog
--             wants UUIDs: there the id packs a hash of PREFIX, thread, index and counter)
--   PATH      request path (the topic is part of it; show appends ?id=<event id>)
--   OUT       done() writes OUT.ids (every id the server answered 2xx for), OUT.samples
--             (one line per answer: completion time us, status, latency us or -1) and, in the
--             protocol modes, OUT.sent (the ids of each request sent, one request a line)
--   API_KEY   where the mode's protocol carries it: X-Api-Key (native, Snowplow, Confluent),
--             HTTP Basic user name (Segment), the body's api_key (PostHog)
-- done() also prints "BENCH ..." lines (wrk's exact totals and percentiles) for bench/loadgen.py.
--
-- Per-request latency: a connection never has two requests in flight, but wrk does not tell
-- the script which connection answers, so each request is keyed by its (unique) first event id,
-- which every 2xx answer lists: the time from request() to response() of the same id. Answers
-- without ids (errors) count in wrk's histogram but have no per-request latency here. The
-- protocols' answers list no ids, so there only wrk's histogram has latencies, and the Kafka
-- check compares the topic with the ids sent (OUT.sent) and the number of 2xx answers.

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

-- The client protocols: where the key goes and what wraps the batch of events.
local PROTOCOL_CONTENT_TYPES = {
  segment = "application/json",
  posthog = "application/json",
  snowplow = "application/json; charset=utf-8",
  confluent = "application/vnd.kafka.json.v2+json",
}
local SNOWPLOW_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"

local BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(text)
  local out = {}
  for i = 1, #text, 3 do
    local a, b, c = text:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 1, 4 do
      local index = math.floor(n / 64 ^ (4 - j)) % 64
      chars[j] = BASE64:sub(index + 1, index + 1)
    end
    if not b then chars[3] = "=" end
    if not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

-- A 32-bit hash of the run's prefix, so PostHog's UUID-shaped ids differ between runs.
local function hash32(text)
  local h = 5381
  for i = 1, #text do
    h = bit.band(bit.bxor(h * 33, text:byte(i)), 0x7fffffff)
  end
  return h
end

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
  protocol = PROTOCOL_CONTENT_TYPES[mode] and mode or nil
  sent = {}
  uuid_prefix = bit.tohex(hash32(prefix), 8) .. "-" .. bit.tohex(thread_number, 4) .. "-"
  api_key = args[5] or ""
  headers = {}
  if mode ~= "show" then
    headers["Content-Type"] = PROTOCOL_CONTENT_TYPES[mode] or "application/json"
  end
  if api_key ~= "" and mode == "segment" then
    headers["Authorization"] = "Basic " .. base64(api_key .. ":")
  elseif api_key ~= "" and mode ~= "posthog" then
    headers["X-Api-Key"] = api_key
  end
end

-- About 200 bytes of JSON: a realistic page-view event with a unique id.
local function event(id)
  return '{"id":"' .. id .. '","key":"user-' .. (counter % 97)
    .. '","type":"page_view","page":"/products/shoes/item-1234","ref":"/search?q=run"'
    .. ',"ts":1764316800123,"ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
end

-- The same page view in each protocol's own fields (about 200 bytes of JSON each).
local function segment_message(id)
  return '{"type":"track","messageId":"' .. id .. '","userId":"user-' .. (counter % 97)
    .. '","event":"page_view","properties":{"page":"/products/shoes/item-1234"'
    .. ',"ref":"/search?q=run","ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
    .. ',"timestamp":"2026-12-01T00:00:00Z"}'
end

local function posthog_event(id)
  return '{"event":"$pageview","uuid":"' .. id .. '","distinct_id":"user-' .. (counter % 97)
    .. '","properties":{"$current_url":"/products/shoes/item-1234","$referrer":"/search?q=run"'
    .. ',"$user_agent":"Mozilla/5.0 (X11; Linux x86_64)","ab":"B"}'
    .. ',"timestamp":"2026-12-01T00:00:00Z"}'
end

local function snowplow_event(id)
  return '{"e":"pv","eid":"' .. id .. '","aid":"bench","p":"web","tv":"py-1.1.0","uid":"user-'
    .. (counter % 97) .. '","url":"https://shop.example/products/shoes/item-1234"'
    .. ',"page":"Shoes","refr":"https://shop.example/search?q=run"'
    .. ',"ua":"Mozilla/5.0 (X11; Linux x86_64)","dtm":"1764547200000"}'
end

local function confluent_record(id)
  return '{"key":"user-' .. (counter % 97) .. '","value":' .. event(id) .. "}"
end

local PROTOCOL_BODIES = {
  segment = { segment_message, '{"batch":[', "]}" },
  posthog = { posthog_event, nil, "]}" },
  snowplow = { snowplow_event, '{"schema":"' .. SNOWPLOW_SCHEMA .. '","data":[', "]}" },
  confluent = { confluent_record, '{"records":[', "]}" },
}

-- A protocol's batch of BATCH_SIZE events; every id sent is kept for the Kafka check.
local function protocol_request(id)
  local make, head, tail = unpack(PROTOCOL_BODIES[protocol])
  local ids, items = {}, {}
  for index = 1, BATCH_SIZE do
    if protocol == "posthog" then
      ids[index] = uuid_prefix .. bit.tohex(index, 4) .. "-8000-" .. string.format("%012x", counter)
    else
      ids[index] = id .. "-" .. index
    end
    items[index] = make(ids[index])
  end
  if protocol == "posthog" then
    head = '{"api_key":"' .. api_key .. '","batch":['
  end
  sent[#sent + 1] = table.concat(ids, " ")
  return wrk.format("POST", path, headers, head .. table.concat(items, ",") .. tail)
end

function request()
  counter = counter + 1
  local id = thread_prefix .. counter
  local formatted
  if protocol then
    return protocol_request(id)
  elseif mode == "show" then
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
  local sent_file = assert(io.open(out .. ".sent", "w"))
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
    for _, request_ids in ipairs(thread:get("sent")) do
      sent_file:write(request_ids, "\n")
    end
  end
  ids_file:close()
  samples_file:close()
  sent_file:close()
  for status, count in pairs(total) do
    print(string.format("BENCH status %d %d", status, count))
  end
end
