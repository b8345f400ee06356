"""The management server: REST API, agent gateway, dispatcher, task runner."""
