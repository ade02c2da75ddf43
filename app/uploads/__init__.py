"""The steps of an upload, one module each, holding both halves of its step: what the API does and what the
worker does (start, provisioning, part URLs, complete and hand-off, status, cancel).
"""
