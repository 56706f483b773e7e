"""The pool's tables: procrastinate's own schema plus two small tables of ours.

- `imagine_pool_workers`: what each live procrastinate worker runs on (host, device, GPU name,
  model), deleted with its `procrastinate_workers` row when the worker stops or is pruned.
- `imagine_pool_turns`: when each member ("o:<owner>") and each group ("g:<server>") last got a
  turn, for the fair claim query (`generation.pool.queries.CLAIM_ORDER`).
- `imagine_pool_results`: a finished job's outcome (result metadata or error, and in
  `database` results mode its PNGs), written in the transaction that finishes the job, read and
  deleted by the bot process that delivers it.
"""

from __future__ import annotations

from procrastinate.schema import SchemaManager

POOL_TABLES = """
CREATE TABLE IF NOT EXISTS imagine_pool_workers (
    worker_id bigint PRIMARY KEY REFERENCES procrastinate_workers(id) ON DELETE CASCADE,
    host text NOT NULL,
    pid integer NOT NULL,
    device text NOT NULL,
    gpu text NOT NULL,
    model_id text NOT NULL,
    queue_name text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE IF NOT EXISTS imagine_pool_turn_seq;
CREATE TABLE IF NOT EXISTS imagine_pool_turns (
    key text PRIMARY KEY,
    served bigint NOT NULL
);
-- A job is found by the bot's job id (re-attaching after a restart, reading its result).
CREATE INDEX IF NOT EXISTS imagine_pool_jobs_job_id
    ON procrastinate_jobs ((args->>'job_id'));
CREATE TABLE IF NOT EXISTS imagine_pool_results (
    job_id text PRIMARY KEY,
    procrastinate_id bigint NOT NULL,
    status text NOT NULL,
    meta jsonb NOT NULL,
    images bytea[],
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

DROP_POOL_TABLES = """
DROP TABLE IF EXISTS imagine_pool_results;
DROP TABLE IF EXISTS imagine_pool_turns;
DROP SEQUENCE IF EXISTS imagine_pool_turn_seq;
DROP TABLE IF EXISTS imagine_pool_workers;
"""

#: Serialises schema creation between processes starting together.
_SCHEMA_LOCK = 0x1A6E_0006


def schema_sql(with_procrastinate: bool) -> str:
    """The DDL to run: procrastinate's schema (when absent) then ours (idempotent)."""
    parts = [SchemaManager.get_schema()] if with_procrastinate else []
    parts.append(POOL_TABLES)
    return "\n".join(parts)


async def ensure_schema(conn) -> None:  # psycopg.AsyncConnection, autocommit
    """Create procrastinate's schema if the database has none, then the pool tables."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        row = await cursor.fetchone()
        await conn.execute(schema_sql(with_procrastinate=not row[0]))
