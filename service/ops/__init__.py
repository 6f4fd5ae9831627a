"""Ops domain of the service."""
