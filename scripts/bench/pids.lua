-- wrk: count responses per worker pid (the test app's /pid), new connection each time.
counts = {}  -- global: read back with thread:get
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() counts = {} end
response = function(status, headers, body) counts[body] = (counts[body] or 0) + 1 end
done = function()
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for pid, n in pairs(c) do total[pid] = (total[pid] or 0) + n end
  end
  for pid, n in pairs(total) do io.write(string.format("PID %s %d\n", pid, n)) end
end
