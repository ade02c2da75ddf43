--- One request's token from its key's bucket for a route class (routes that run no other script).
-- KEYS: bucket, limits
-- ARGV: route_class, default_rate, default_burst
-- REPLY: ok <tokens left> <retry ms> <rate> <burst> | rate_limited <tokens left> <retry ms> <rate> <burst>
--! include ratelimit
local r = take_token(key.bucket, key.limits, arg.route_class, arg.default_rate, arg.default_burst)
if r[1] == 1 then return {${reply.ok}, r[2], r[3], r[4], r[5]} end
return {${reply.rate_limited}, r[2], r[3], r[4], r[5]}
