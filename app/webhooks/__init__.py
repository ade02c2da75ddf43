"""Webhooks (SPEC 3.9): endpoints per account, the dispatcher that fans the outbox's events out to them, one delivery
attempt (signed per Standard Webhooks, over a connection that refuses private addresses), and redelivery.
"""
