-- wrk script for bench/run_streaming.py: picks a file per request, and for range mode a
-- random window of SPAN bytes inside it; the choices come from math.random with a fixed
-- seed, so every server sees the same sequence of requests (per connection schedule).
--
-- wrk -t1 -cN -dS --latency --timeout 30s -s ranges.lua URL -- MANIFEST PREFIX MODE SEED SPAN
--   MANIFEST  file of "name size [query]" lines (names already URL-safe; the optional
--             query, e.g. a signed URL's "expires=…&sig=…", is appended after "?")
--   PREFIX    URL path prefix of the media root, e.g. /stream/ or /
--   MODE      "range" (Range: bytes=a-(a+SPAN-1)), "full" (whole file, no Range) or "mix"
--             (a seeking player: 70 % 256 KiB ranges, 20 % 1 MiB ranges, 10 % whole files)
--   SEED      integer seed for math.randomseed
--   SPAN      range length in bytes (262144 for 256 KiB)
--
-- BENCH_AUTHORIZATION in the environment, when set, is sent as the Authorization header.
--
-- done() prints one line "WRKJSON {...}" with exact counts and latency percentiles
-- (microseconds) for the harness to parse; wrk's own --latency text is printed too.

local files = {}
local mode = "range"
local span = 262144
local base_headers = {}

function init(args)
   local manifest, prefix = args[1], args[2]
   mode = args[3] or "range"
   math.randomseed(tonumber(args[4] or "1"))
   span = tonumber(args[5] or "262144")
   local authorization = os.getenv("BENCH_AUTHORIZATION")
   if authorization and authorization ~= "" then
      base_headers["Authorization"] = authorization
   end
   for line in io.lines(manifest) do
      local name, size, query = line:match("^(%S+)%s+(%d+)%s*(%S*)$")
      if name then
         local path = prefix .. name
         if query ~= "" then
            path = path .. "?" .. query
         end
         files[#files + 1] = { path = path, size = tonumber(size) }
      end
   end
end

function request()
   local f = files[math.random(#files)]
   local length = span
   if mode == "mix" then
      -- A player seeking: 70 % 256 KiB ranges, 20 % 1 MiB ranges, 10 % whole files.
      local r = math.random()
      if r < 0.7 then
         length = 262144
      elseif r < 0.9 then
         length = 1048576
      else
         length = nil
      end
      if length ~= nil and length > f.size then
         length = nil
      end
   end
   if (mode == "range" or mode == "mix") and length ~= nil then
      local first = math.random(0, f.size - length)
      local headers = { ["Range"] = "bytes=" .. first .. "-" .. (first + length - 1) }
      for k, v in pairs(base_headers) do
         headers[k] = v
      end
      return wrk.format("GET", f.path, headers)
   end
   return wrk.format("GET", f.path, base_headers)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
      '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
      '"latency_us": {"p50": %.0f, "p90": %.0f, "p99": %.0f, "max": %.0f, "mean": %.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
