"""Reconcilers: close the gaps between what the database says and what the hosts report."""
