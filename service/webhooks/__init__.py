"""The /v1/webhook-secret API: each API key signs its own webhooks."""
