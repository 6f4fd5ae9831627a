"""Core domain of the service."""
