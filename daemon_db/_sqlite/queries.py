"""The SQLite engine's units of work, as the shared front asks for them."""

from .._engine import Queries
from . import events, owners, runs, units

QUERIES = Queries(runs=runs, units=units, events=events, owners=owners)
