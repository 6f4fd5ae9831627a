"""Files domain of the service."""
