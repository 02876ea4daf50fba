"""The SQLite engine: its connections, its SQL, its schema and migrations.

Everything that knows it talks to SQLite lives here: ``schema`` and
``migrations`` (the file), ``runs``, ``units`` and ``events`` (the queries, as
plain functions of a ``sqlite3.Connection``), ``work`` (transactions and error
translation on the connection's thread), ``bridge`` (aiosqlite's thread),
``writer`` (group commit), ``maintenance``, and ``db`` and ``transaction``:
the DB ``DB.open()`` returns for a path, with its writer and reader
connections, and its transaction blocks.
"""
