-- wrk script for bench/console_load.py's status_api_304 run: each connection polls as a
-- dashboard does, sending back the ETag of its last 200 (If-None-Match), and counts 200s
-- and 304s apart (printed by done() as ETAG_POLL <json>).
local etag = nil
local counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok200 = 0
  not_modified = 0
end

function request()
  if etag then
    wrk.headers["If-None-Match"] = etag
  end
  return wrk.format()
end

function response(status, headers, body)
  if status == 200 then
    ok200 = ok200 + 1
    etag = headers["ETag"] or headers["etag"]
  elseif status == 304 then
    not_modified = not_modified + 1
  end
end

function done(summary, latency, requests)
  local a, b = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("ok200")
    b = b + t:get("not_modified")
  end
  io.write(string.format('ETAG_POLL {"ok_200": %d, "not_modified_304": %d}\n', a, b))
end
