"""The host agent: dials out to a server, heartbeats, executes commands through a driver."""
