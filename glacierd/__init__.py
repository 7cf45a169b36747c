"""glacierd: back up a PostgreSQL database and its attached files to Amazon Glacier."""

__version__ = "0.1.0"
