"""Upkeep: the periodic sweeps that run on the workers (expiry, orphaned uploads, stored objects, re-drive)."""
