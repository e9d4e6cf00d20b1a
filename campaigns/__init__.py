"""Campaigns: switching the provider of many devices at once (issue 6 item 2)."""
