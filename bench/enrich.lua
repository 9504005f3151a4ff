-- wrk script for POST /memory/enrich: a fresh turn id on every request, 200 sessions each
-- with its own memory token (read from a file), keep-alive connections.
-- Usage: wrk -s bench/enrich.lua URL -- TOKENS_FILE ID_PREFIX
-- TOKENS_FILE holds "session_id token" per line. Prints one JSON line in done().

local threads = {}
local sessions = {}
local prefix = "w"
local counter = 0
local text = string.rep(
  "Tell me more about the trip to Lisbon we planned last spring, and the museums. ", 2)

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    local sid, token = line:match("^(%S+) (%S+)$")
    if sid then
      sessions[#sessions + 1] = {
        '{"session_id":"' .. sid .. '","messages":[{"id":"',
        { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
      }
    end
  end
  prefix = (args[2] or "w") .. "t" .. tostring(tid) .. "_"
end

function request()
  counter = counter + 1
  local s = sessions[(counter % #sessions) + 1]
  local body = s[1] .. prefix .. counter .. '","role":"user","text":"' .. text .. '"}]}'
  return wrk.format("POST", nil, s[2], body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
