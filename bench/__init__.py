"""Benchmarks: daemon_db side by side with raw sqlite3, plain aiosqlite and SQLAlchemy.

Run with ``make bench`` (or ``python -m bench [--quick] [--json]``).
"""
