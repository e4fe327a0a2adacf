"""Pacing: when each request may go, per model, from the user's quotas and the
server's own (its ``x-ratelimit-*`` headers), with cooldowns, AIMD and a slow start.

``buckets`` (pure token-bucket arithmetic), ``account`` (one model's share of the
endpoint), ``scheduler`` (lanes of requests over the accounts; the only part that
waits).
"""
