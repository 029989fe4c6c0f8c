"""The database layer: the only code in accoil-buffer that writes SQL.

``engine`` opens databases and decides every SQLite/PostgreSQL difference once; ``schema``
declares the tables; ``migrate`` runs Alembic in code; ``outbox`` appends accepted messages;
``rollup`` folds the outbox into users, accounts and daily counts; ``report`` reads status.
"""
