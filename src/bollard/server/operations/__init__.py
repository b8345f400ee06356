"""Operation services: what an operator (through the API), a drain or a reconciler asks of
the cluster. Each checks the request's rules, changes intent in one transaction (taking a VM
or a node with a compare-and-swap) and launches the task that carries it out. Routers call
these; they hold no business rules themselves."""
