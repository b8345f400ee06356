"""The web console: a single-page app served at /ui by the server itself (no build step, no
asset from the internet), talking to the REST API with the caller's token."""
