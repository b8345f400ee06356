"""Hypervisor drivers, reached only through the HypervisorDriver interface."""
