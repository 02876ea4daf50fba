"""PostgreSQL URLs: telling one from a SQLite path, and showing one without its password.

Kept apart from the rest of the engine so that ``DB.open()`` can tell a URL
without importing asyncpg, which only the ``postgres`` extra installs.
"""

from __future__ import annotations

import urllib.parse

__all__ = ["is_url", "shown_url"]

SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return location.lower().startswith(SCHEMES)


_SECRETS = frozenset({"password", "sslpassword"})
"""Query parameters that hold a secret (asyncpg reads them as libpq does)."""


def shown_url(url: str) -> str:
    """The URL as errors and ``DB.path`` show it: without its password.

    The password may also come as a ``?password=`` parameter (or
    ``sslpassword=``, the client key's); those are left out too.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port is not None else "")
        query = "&".join(
            pair
            for pair in parts.query.split("&")
            if urllib.parse.unquote_plus(pair.split("=", 1)[0]).lower() not in _SECRETS
        )
        if (netloc, query) == (parts.netloc, parts.query):
            return url
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        # A URL urllib cannot split (a bad port, say): show only its scheme.
        return url.split("://", 1)[0] + "://..."
