"""The `bollard` command line."""
