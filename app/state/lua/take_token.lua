--- Tokens from a key's bucket for a route class: a request's own token (routes that run no other script), or
--- the rest of what it costs once its work is known (URLs to sign, files to refresh, parts to complete).
-- KEYS: bucket, limits
-- ARGV: route_class, default_rate, default_burst, cost, capped
-- REPLY: ok <tokens left> <retry ms> <rate> <burst> | rate_limited <tokens left> <retry ms, -1: never> <rate> <burst>
--! include ratelimit
local r = take_tokens(key.bucket, key.limits, arg.route_class, arg.default_rate, arg.default_burst, arg.cost, arg.capped)
if r[1] == 1 then return {${reply.ok}, r[2], r[3], r[4], r[5]} end
return {${reply.rate_limited}, r[2], r[3], r[4], r[5]}
