"""The database layer: the only code in accoil-buffer that writes SQL.

``engine`` is a database (engine, dialect, transactions), opened by ``connect``; ``dialects``
holds every SQLite/PostgreSQL difference; ``direct`` executes SQL past SQLAlchemy's machinery;
``forks`` keeps fork() safe for SQLite; ``schema`` declares the tables; ``migrate`` runs
Alembic in code; ``outbox`` appends accepted messages; ``rollup`` folds the outbox into users,
accounts and daily counts, merging traits in ``traits``; ``deliveries`` claims and records
what is sent, ``holders`` tells live flushers from dead ones; ``report`` reads status.
"""
