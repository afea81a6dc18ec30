-- wrk: each request from the next of 1,000 client addresses (X-Forwarded-For; the appliance
-- trusts 127.0.0.1 as a proxy), in four /24 networks.
local n = 0
request = function()
  n = (n + 1) % 1000
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["X-Forwarded-For"] = string.format("10.0.%d.%d", math.floor(n / 250), n % 250 + 1)
  return wrk.format(nil, nil, headers)
end
