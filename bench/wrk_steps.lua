-- The load generator of bench-peer (bench/wrk.py): one step of the flow, run by wrk, whose
-- event loop is C and whose script is LuaJIT, so the generator spends less than a tenth of a
-- millisecond per request (bench-peer's own share included) of the cores it shares with the
-- servers it measures.
--
-- Arguments after "--": the step (authorize, exchange or refresh), how many requests, the
-- input file, the output file, the app's redirect URI, the access and refresh token prefixes,
-- the request path, then header name and value pairs. The input holds one line per request
-- for authorize (its target, each with a state of its own) and exchange (its form body), and
-- one refresh token per chain for refresh. Exactly that many requests are sent: a connection
-- that would send one more waits instead, and the run stops at the last answer.
--
-- Each answer is checked as bench/compare.py checks it; a wrong one counts as an error and the
-- first few say why. The output: a line "answered errors duration_us p50_us p99_us broken"
-- (broken: connections wrk saw fail), then the error samples ("sample" lines), then what the
-- step yields ("out" lines): authorize, the codes; exchange, "access refresh" pairs; refresh,
-- each chain's latest refresh token.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } otesse_timespec;
int clock_gettime(int clock, otesse_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("otesse_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local total, redirect, at_prefix, rt_prefix, head, prefix
local lines = {}
local issued, reserved = 0, 0
local verified = false
local states = {}

-- Read by done() through thread:get (globals of the thread's state).
step = nil
outfile = nil
answered = 0
errors = 0
-- From the first request sent to the last answer, in microseconds.
began, ended = 0, 0
samples = {}
out = {}
-- refresh: each chain's latest refresh token, handed to the next request of any connection
-- (a chain has one request in flight at most, as each connection has).
chains = {}

function init(args)
  step, total, outfile = args[1], tonumber(args[2]), args[4]
  redirect, at_prefix, rt_prefix = args[5], args[6], args[7]
  local method = step == "authorize" and "GET" or "POST"
  local fixed = {}
  for i = 9, #args - 1, 2 do fixed[#fixed + 1] = args[i] .. ": " .. args[i + 1] .. "\r\n" end
  head = table.concat(fixed)
  for line in io.lines(args[3]) do lines[#lines + 1] = line end
  if step == "authorize" then
    for _, target in ipairs(lines) do states[target:match("[?&]state=([^&]*)$")] = true end
    head = head .. "\r\n"
  elseif step == "refresh" then
    chains = lines
  end
  prefix = method .. " " .. args[8] .. " HTTP/1.1\r\n"
end

function delay()
  -- wrk asks before each request of a connection, and sends it a turn of its loop later: the
  -- request is counted here, so that several connections asking in one turn never send more
  -- than the total between them. Once every request is counted, a connection sends no more.
  if reserved >= total then return 3600000 end
  reserved = reserved + 1
  return 0
end

function request()
  if not verified then
    -- wrk's first call checks that the script's request parses (how many it pipelines),
    -- after init() and before any connection: that request is never sent.
    verified = true
    return wrk.format("GET", "/")
  end
  issued = issued + 1
  if issued == 1 then began = now_us() end
  -- More requests than inputs only when wrk sent a request again on a new connection (a
  -- connection error, counted): the last input again, which fails its checks and counts.
  local line = lines[math.min(issued, #lines)]
  if step == "authorize" then
    return "GET " .. line .. " HTTP/1.1\r\n" .. head
  end
  local body
  if step == "exchange" then
    body = line
  else
    -- A chain whose last refresh failed has no token left: the request fails, and counts.
    body = "grant_type=refresh_token&refresh_token=" .. (table.remove(chains) or "lost")
  end
  return prefix .. head .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
end

local function fail(message)
  errors = errors + 1
  if #samples < 3 then samples[#samples + 1] = message end
end

local function unescape(value)
  value = value:gsub("%+", " ")
  return (value:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function authorized(status, headers)
  if status ~= 302 and status ~= 303 then
    return fail("GET answered " .. status)
  end
  local location = headers["location"] or headers["Location"] or ""
  if location:sub(1, #redirect + 1) ~= redirect .. "?" then
    return fail("redirected to " .. location:sub(1, 80) .. ", not the app's redirect URI")
  end
  local state, code, problem
  for name, value in location:sub(#redirect + 2):gmatch("([^&=]+)=([^&]*)") do
    if name == "state" then state = unescape(value)
    elseif name == "code" then code = code or unescape(value)
    elseif name == "error" then problem = unescape(value) end
  end
  if not state or not states[state] then
    return fail("the redirect did not carry the state of a request of this run")
  end
  states[state] = nil
  if not code then return fail("no code in the redirect: " .. tostring(problem)) end
  out[#out + 1] = code
end

local function tokens(status, body)
  if status ~= 200 then
    return fail("POST answered " .. status .. ": " .. body:sub(1, 160))
  end
  local access = body:match('"access_token"%s*:%s*"([^"]*)"') or ""
  local refresh = body:match('"refresh_token"%s*:%s*"([^"]*)"') or ""
  if access:sub(1, #at_prefix) ~= at_prefix or refresh:sub(1, #rt_prefix) ~= rt_prefix
      or #access <= #at_prefix or #refresh <= #rt_prefix
      or body:match('"token_type"%s*:%s*"([^"]*)"') ~= "Bearer"
      or body:match('"expires_in"%s*:%s*(%d+)') ~= "3600" then
    return fail("not the expected token response: " .. body:sub(1, 160))
  end
  if step == "refresh" then
    chains[#chains + 1] = refresh
  else
    out[#out + 1] = access .. " " .. refresh
  end
end

function response(status, headers, body)
  answered = answered + 1
  if step == "authorize" then authorized(status, headers) else tokens(status, body) end
  if answered == total then
    ended = now_us()
    wrk.thread:stop()
    -- wrk's main thread sleeps for the whole -d: bench/wrk.py wakes it (SIGINT) on this line.
    io.stderr:write("answered\n")
    io.stderr:flush()
  end
end

-- The setup and done phases run in a state of their own: the thread's globals come by get().
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local thread = threads[1]
  local file = assert(io.open(thread:get("outfile"), "w"))
  local e = summary.errors
  file:write(string.format("%d %d %d %d %d %d\n", thread:get("answered"),
                           thread:get("errors"),
                           -- Ended before the last answer (wrk's -d): wrk's own duration.
                           thread:get("ended") > 0 and thread:get("ended") - thread:get("began")
                             or summary.duration,
                           latency:percentile(50),
                           latency:percentile(99), e.connect + e.read + e.write + e.timeout))
  for _, sample in ipairs(thread:get("samples")) do
    file:write("sample ", (sample:gsub("[\r\n]", " ")), "\n")
  end
  -- refresh: the chains' tokens, for the next run to go on with.
  local yielded = thread:get("step") == "refresh" and thread:get("chains") or thread:get("out")
  for _, value in ipairs(yielded) do file:write("out ", value, "\n") end
  file:close()
end
