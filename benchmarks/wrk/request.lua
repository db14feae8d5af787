-- One request shape for wrk, driven by benchmarks/serve.py.
--
--   wrk -s request.lua URL -- METHOD HEADERS BODY PROOFS THREADS
--
-- METHOD   GET or POST
-- HEADERS  a file of "Name: value" lines, sent with every request
-- BODY     a file whose bytes are the request body, or "-" for none
-- PROOFS   "-" for a static request, or a prefix: thread i reads PROOFS.i, one DPoP proof a
--          line, and sends each proof once, in order (the files are disjoint, so no proof is
--          ever sent twice); a thread that runs out sends requests without a proof, which the
--          server refuses, and counts them in `exhausted`, reported by done()
-- THREADS  wrk's -t, so that each thread knows which file is its own
--
-- done() prints one line "BENCH {json}" with the run's counts and latency percentiles (µs).

local counter = 0
local threads = {}

function setup(thread)
   thread:set("index", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   local method, headers_path, body_path, proofs_prefix = args[1], args[2], args[3], args[4]
   local headers = {}
   for line in io.lines(headers_path) do
      local name, value = line:match("^([^:]+):%s?(.*)$")
      if name then
         headers[name] = value
      end
   end
   local body = nil
   if body_path ~= "-" then
      body = read_file(body_path)
   end
   exhausted = 0
   sent = 0
   if proofs_prefix == "-" then
      -- A static request: wrk builds it once from these and sends the same bytes every time.
      wrk.method = method
      wrk.headers = headers
      wrk.body = body
      return
   end
   local proofs = {}
   for line in io.lines(proofs_prefix .. "." .. index) do
      if #line > 0 then
         proofs[#proofs + 1] = line
      end
   end
   local count = #proofs
   local without = wrk.format(method, wrk.path, headers, body)
   local position = 0
   request = function()
      if position >= count then
         exhausted = exhausted + 1
         return without
      end
      position = position + 1
      sent = position
      headers["DPoP"] = proofs[position]
      return wrk.format(method, wrk.path, headers, body)
   end
end

function done(summary, latency, requests)
   local exhausted_total, sent_total = 0, 0
   for _, thread in ipairs(threads) do
      exhausted_total = exhausted_total + (thread:get("exhausted") or 0)
      sent_total = sent_total + (thread:get("sent") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, '
         .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, '
         .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "proofs_sent": %d, "exhausted": %d}\n',
      summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max, sent_total, exhausted_total))
end
