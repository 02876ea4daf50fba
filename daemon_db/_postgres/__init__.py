"""The PostgreSQL engine: its pool, its SQL, its schema and migrations.

Everything that knows it talks to PostgreSQL lives here: ``schema`` (the
numbered migrations, applied under an advisory lock), ``runs``, ``units``,
``events`` and ``owners`` (the queries, as coroutine functions of an asyncpg
connection), ``queries`` (them as the front's units of work), ``errors``
(asyncpg's exceptions turned into daemon_db's) and ``db`` (the pool,
transactions, and LISTEN/NOTIFY for ``follow_events``). asyncpg is imported
only here, and only when a ``postgresql://`` URL is opened.
"""
