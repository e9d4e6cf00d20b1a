"""Notifications: per-organisation webhooks for job, consent, switch and campaign events."""
