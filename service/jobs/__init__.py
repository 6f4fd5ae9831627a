"""Jobs domain of the service."""
