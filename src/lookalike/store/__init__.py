"""The durable state of a collection: the store contract (:mod:`.base`), its records, the
SQLite and PostgreSQL stores and the registry that opens a ``--db`` string."""
