"""SQL executed on the driver's connection, past SQLAlchemy's per-statement and per-row
machinery, which cost as much as the database's own work on the append and merge paths."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from accoil_buffer.store.dialects import Dialect

T = TypeVar("T")
_SLICE = 1000  # rows bound per statement: a whole batch's parameters at once take a lot of memory
log = logging.getLogger(__name__)


class Rows(Protocol):
    """What a statement executed directly gives back."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> Sequence[Any]: ...


class Executor(Protocol):
    """Executes SQL as the driver takes it: a ``Connection``, or a ``DirectTransaction``."""

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows: ...


@dataclass(frozen=True)
class _Fetched:
    rowcount: int
    rows: list[Any]

    def fetchall(self) -> list[Any]:
        return self.rows


class DirectTransaction:
    """A transaction on a pooled driver connection (see ``Database.direct_write``).

    Driver errors are raised as SQLAlchemy raises them, and a lost connection is invalidated
    as SQLAlchemy would do it, so callers handle one kind of error whichever path wrote."""

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._hide_parameters = engine.hide_parameters
        try:
            self._driver = engine.raw_connection()
        except self._dialect.loaded_dbapi.Error as exc:
            raise self._translated(exc, "connect", None, lost=False) from exc
        self._cursor = self._driver.cursor()
        self._lost = False

    def begin(self) -> None:
        self._run("BEGIN", None, self._dialect.do_begin)

    def commit(self) -> None:
        self._run("COMMIT", None, self._dialect.do_commit)

    def rollback(self) -> None:
        """Best effort: the error that made the caller roll back is the one to report. A
        lost connection has nothing to roll back (the server did)."""
        if self._lost:
            return
        try:
            self._run("ROLLBACK", None, self._dialect.do_rollback)
        except DBAPIError:
            log.warning("could not roll back a direct write transaction", exc_info=True)

    def close(self) -> None:
        """Return the connection to the pool."""
        self._driver.close()

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> _Fetched:
        """Execute ``statement`` once (``parameters`` a tuple) or for each of a list of tuples,
        as ``Connection.exec_driver_sql`` does; rows it returns are read at once."""

        def execute(_: PoolProxiedConnection) -> _Fetched:
            if isinstance(parameters, list):
                self._cursor.executemany(statement, parameters)
            else:
                self._cursor.execute(statement, parameters or ())
            rows = list(self._cursor.fetchall()) if self._cursor.description else []
            return _Fetched(self._cursor.rowcount, rows)

        return self._run(statement, parameters, execute)

    def _run(
        self, statement: str, parameters: Any, action: Callable[[PoolProxiedConnection], T]
    ) -> T:
        try:
            return action(self._driver)
        except self._dialect.loaded_dbapi.Error as exc:
            self._lost = self._dialect.is_disconnect(exc, self._driver, self._cursor)
            if self._lost:
                self._driver.invalidate(exc)
            raise self._translated(exc, statement, parameters, lost=self._lost) from exc

    def _translated(
        self, exc: Exception, statement: str, parameters: Any, *, lost: bool
    ) -> BaseException:
        return DBAPIError.instance(
            statement,
            parameters,
            exc,
            self._dialect.loaded_dbapi.Error,
            hide_parameters=self._hide_parameters,
            connection_invalidated=lost,
            dialect=self._dialect,
        )


class DirectInsert:
    """An INSERT of many rows, executed directly with values converted as the columns' types
    would convert them; ``on_conflict`` is a clause the dialect spelled (``upsert``,
    ``insert_or_ignore``)."""

    def __init__(
        self,
        dialect: Dialect,
        table: Table,
        names: Sequence[str],
        *,
        on_conflict: str = "",
        returning: str = "",
    ):
        converters = [dialect.to_driver(table.c[name]) for name in names]
        self._converters = [(i, c) for i, c in enumerate(converters) if c is not None]
        self._head = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES "
        self._placeholder = dialect.placeholder
        self._row = f"({', '.join([dialect.placeholder] * len(names))})"
        self._on_conflict = on_conflict
        self._returning = returning
        # One row's statement, for executemany and for run_one.
        self._one_row = self._head + self._row + on_conflict
        self._null_literals = dialect.binds_null_slowly
        self._with_nulls: dict[tuple[bool, ...], tuple[str, tuple[int, ...]]] = {}

    def _values(self, row: Sequence[object]) -> tuple[object, ...]:
        values = list(row)
        for i, convert in self._converters:
            values[i] = convert(values[i])
        return tuple(values)

    def run(self, conn: Executor, rows: Sequence[Sequence[object]]) -> list[Any]:
        """Insert ``rows`` a slice at a time and return what the RETURNING clause gave, if any:
        with one, each slice is one multi-row statement, so that RETURNING reports every row."""
        returned: list[Any] = []
        for start in range(0, len(rows), _SLICE):
            part = [self._values(row) for row in rows[start : start + _SLICE]]
            if not self._returning:
                conn.exec_driver_sql(*self._nulls_written(part))
                continue
            rows_sql = ", ".join([self._row] * len(part))
            sql = self._head + rows_sql + self._on_conflict + self._returning
            flat = tuple(value for row in part for value in row)
            returned.extend(row[0] for row in conn.exec_driver_sql(sql, flat).fetchall())
        return returned

    def run_one(self, conn: Executor, row: Sequence[object]) -> bool:
        """Insert one row without its RETURNING clause, which costs more to read back than the
        insert itself; whether it was inserted (not skipped by the ON CONFLICT clause)."""
        statement, (values,) = self._nulls_written([self._values(row)])
        return conn.exec_driver_sql(statement, values).rowcount > 0

    def _nulls_written(
        self, part: list[tuple[object, ...]]
    ) -> tuple[str, list[tuple[object, ...]]]:
        """The one-row statement for ``part``, with NULL written into it for each column that
        is NULL in every row where the driver binds NULL slowly, and the values left to bind.
        Every loop here runs in C (map, zip): picking the columns costs less than a NULL bound."""
        if not self._null_literals:
            return self._one_row, part
        columns = list(zip(*part, strict=True))
        all_null = tuple(map(len(part).__eq__, map(tuple.count, columns, repeat(None))))
        if not any(all_null):
            return self._one_row, part
        statement, bound = self._with_nulls.get(all_null) or self._remember(all_null)
        if not bound:
            return statement, [()] * len(part)
        return statement, list(zip(*map(columns.__getitem__, bound), strict=True))

    def _remember(self, all_null: tuple[bool, ...]) -> tuple[str, tuple[int, ...]]:
        """The statement with NULL written in for the columns ``all_null`` marks, and the
        positions of the columns still bound."""
        marks = ["NULL" if null else self._placeholder for null in all_null]
        made = (
            self._head + f"({', '.join(marks)})" + self._on_conflict,
            tuple(i for i, null in enumerate(all_null) if not null),
        )
        self._with_nulls[all_null] = made
        return made
