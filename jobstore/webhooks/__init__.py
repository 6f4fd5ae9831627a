"""Webhooks domain of the service."""
