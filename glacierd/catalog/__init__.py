"""glacierd's own tables (its catalog), in their own schema, reached with asyncpg."""

from glacierd.catalog.pool import Catalog, CatalogError

__all__ = ["Catalog", "CatalogError"]
