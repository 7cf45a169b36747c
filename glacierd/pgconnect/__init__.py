"""Reaching PostgreSQL: libpq connection strings, the environment and service file that
pg_dump / pg_restore / psql get, asyncpg's arguments (TLS included), and one connection
helper whose failures read as one sentence.

Both the catalog (catalog/) and the database source (sources/) connect through here, and
the configuration validates connection strings with it, so it sits below all of them.
"""
