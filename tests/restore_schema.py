"""A rich application schema for restore round trips, and the comparisons the tests make.

The schema has what a restore must bring back: an extension (citext), an enum, a domain,
tables with foreign keys, a serial and a standalone sequence moved with setval, a view, a
plpgsql function used by a trigger, a plain and an expression index, and comments.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import asyncpg

from tests import pg

RICH_SCHEMA = """
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE SEQUENCE invoice_numbers START 1000;
SELECT setval('invoice_numbers', 4242);

CREATE TABLE accounts (
    id serial PRIMARY KEY,
    email citext NOT NULL UNIQUE,
    mood mood NOT NULL DEFAULT 'ok',
    touched integer NOT NULL DEFAULT 0
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    account_id integer NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    quantity positive_int NOT NULL,
    invoice_no bigint NOT NULL DEFAULT nextval('invoice_numbers'),
    note text
);
CREATE INDEX orders_account ON orders (account_id);
CREATE INDEX orders_note_lower ON orders (lower(note));

CREATE VIEW happy_accounts AS SELECT id, email FROM accounts WHERE mood = 'happy';

CREATE FUNCTION count_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.touched := OLD.touched + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION count_touch();

COMMENT ON TABLE accounts IS 'people who order things';
COMMENT ON COLUMN orders.note IS 'free text from the customer';
COMMENT ON FUNCTION count_touch() IS 'counts updates';

INSERT INTO accounts (email, mood)
    SELECT 'Person' || g || '@Example.com', (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood
    FROM generate_series(1, 60) g;
INSERT INTO orders (account_id, quantity, note)
    SELECT 1 + g % 60, 1 + g % 7, 'Order number ' || g FROM generate_series(1, 300) g;
UPDATE accounts SET mood = 'happy' WHERE id <= 5;  -- the trigger counts these
"""

# What happens to the database after the backup: data and schema both change.
CHANGES = """
INSERT INTO accounts (email) VALUES ('late@example.com');
DELETE FROM orders WHERE id % 10 = 0;
UPDATE orders SET note = 'changed' WHERE id < 20;
UPDATE accounts SET mood = 'sad' WHERE id BETWEEN 10 AND 20;
DELETE FROM documents WHERE id > 400;
DROP VIEW happy_accounts;
CREATE TABLE added_later (id int PRIMARY KEY, what text);
INSERT INTO added_later VALUES (1, 'should vanish');
ALTER TABLE accounts ADD COLUMN nickname text DEFAULT 'nick';
SELECT setval('invoice_numbers', 99999);
SELECT setval('users_id_seq', 5000);
CREATE FUNCTION added_function() RETURNS int LANGUAGE sql AS 'SELECT 1';
ALTER TYPE mood ADD VALUE 'ecstatic';
CREATE INDEX users_email_upper ON users (upper(email));
COMMENT ON TABLE accounts IS 'changed comment';
"""

SEQUENCES = ("invoice_numbers", "accounts_id_seq", "orders_id_seq", "users_id_seq")


def schema_dump(dbname: str) -> str:
    """``pg_dump --schema-only`` of the application (glacierd's schema left out), without
    comment lines and the ``\\restrict`` lines, which carry a random key."""
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--exclude-schema=glacierd", "-d", pg.dsn_for(dbname)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(
        line
        for line in out.splitlines()
        if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


async def sequence_values(dbname: str, names: tuple[str, ...] = SEQUENCES) -> dict[str, tuple]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        values = {}
        for name in names:
            if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                values[name] = None
                continue
            row = await conn.fetchrow(f"SELECT last_value, is_called FROM {name}")
            values[name] = (row["last_value"], row["is_called"])
        return values
    finally:
        await conn.close()


@dataclass
class DbState:
    """Everything the tests compare: every table's rows, the schema, sequence values."""

    rows: dict[str, list[str]]
    schema: str
    sequences: dict[str, tuple | None]

    def assert_same(self, other: DbState) -> None:
        assert sorted(other.rows) == sorted(self.rows), "the set of tables differs"
        for table, rows in self.rows.items():
            assert other.rows[table] == rows, f"rows of {table} differ"
        assert other.sequences == self.sequences
        if other.schema != self.schema:
            import difflib

            diff = "\n".join(
                difflib.unified_diff(
                    self.schema.splitlines(), other.schema.splitlines(), lineterm="", n=1
                )
            )
            raise AssertionError(f"schemas differ:\n{diff}")


async def capture(dbname: str) -> DbState:
    return DbState(pg.table_rows(dbname), schema_dump(dbname), await sequence_values(dbname))
