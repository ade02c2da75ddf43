"""`spatialgen-admin`: the operators' command line over Redis (keys, queues, jobs, sessions, accounts)."""
