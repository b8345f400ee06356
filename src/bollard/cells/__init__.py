"""The API layer in front of cells: `bollard api`.

A deployment that outgrows one database runs several cells (each an ordinary `bollard server`
with its own database, agents, task engine and reconcilers) behind one API server. The API
server owns the API database (cells, host and VM mappings, flavors, users, tokens), answers
those itself, routes every call about a VM or node to its cell and gathers lists from every
cell with a deadline. Without cells none of this runs.
"""
