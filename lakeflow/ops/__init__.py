"""Table operations: each takes a `Snapshot` (or a URI, for create) and builds a `Transaction`.

Nothing here knows the `Table` handle: the handle calls these with its snapshot
and keeps the state the commit returns.
"""
