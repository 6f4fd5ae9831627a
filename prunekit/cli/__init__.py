"""The `prunekit` command line: local compression (in-process engine) and the service client."""
