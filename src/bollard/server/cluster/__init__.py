"""The control plane of several servers."""
