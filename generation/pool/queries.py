"""The SQL of the pool, in one place, on procrastinate's tables.

Why our own claim query rather than procrastinate's `fetch_job`: procrastinate fetches one job
at a time by (priority, id), and its per-key locks only serialise a key's jobs. The local queue
gives turns, least recently served first, and takes several compatible jobs into one pipeline
call; priorities fixed at defer time cannot express "least recently served", and one-at-a-time
fetching cannot batch. So a worker orders the waiting jobs itself (below), under one
transaction-level advisory lock per queue so two workers never race for the same turn, and marks
the chosen rows `doing` with its worker id; everything else (deferring, cancel/abort,
heartbeats, stalled-worker pruning, retry, finish, the events table) is procrastinate's own.
"""

from __future__ import annotations

#: Waiting jobs in the order they would start: every `fast` job before every `relax` one (the
#: tier is in the task's args; jobs deferred before tiers existed are fast), then servers take
#: turns (the one served least recently first), inside a server its members take turns the
#: same way, and each member's jobs run in the order they were queued. `owner` is
#: "<server>:<member>"; an owner without ":" is its own server.
CLAIM_ORDER = """
WITH waiting AS (
    SELECT j.id, j.args,
           j.args->>'owner' AS owner,
           split_part(j.args->>'owner', ':', 1) AS grp,
           coalesce(j.args->>'tier', 'fast') = 'relax' AS relax
      FROM procrastinate_jobs j
     WHERE j.queue_name = %(queue)s
       AND j.task_name = %(task)s
       AND j.status = 'todo'
       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
     ORDER BY j.id
     LIMIT %(limit)s
), by_owner AS (
    SELECT w.*,
           row_number() OVER (PARTITION BY w.relax, w.owner ORDER BY w.id) AS owner_rank,
           min(w.id) OVER (PARTITION BY w.relax, w.owner) AS owner_first
      FROM waiting w
), by_group AS (
    SELECT b.*,
           row_number() OVER (
               PARTITION BY b.relax, b.grp
               ORDER BY b.owner_rank, coalesce(t.served, -1), b.owner_first
           ) AS group_rank,
           min(b.id) OVER (PARTITION BY b.relax, b.grp) AS group_first
      FROM by_owner b
      LEFT JOIN imagine_pool_turns t ON t.key = 'o:' || b.owner
)
SELECT g.id, g.args
  FROM by_group g
  LEFT JOIN imagine_pool_turns t ON t.key = 'g:' || g.grp
 ORDER BY g.relax, g.group_rank, coalesce(t.served, -1), g.group_first
"""

CLAIM_LOCK = "SELECT pg_advisory_xact_lock(hashtext('imagine_pool_claim:' || %(queue)s))"

MARK_DOING = """
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker)s
 WHERE id = ANY(%(ids)s) AND status = 'todo'
RETURNING id
"""

TAKE_TURN = """
INSERT INTO imagine_pool_turns (key, served)
SELECT k, nextval('imagine_pool_turn_seq') FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (key) DO UPDATE SET served = EXCLUDED.served
"""

#: Running jobs of dead workers: no worker row (pruned, or never registered) or a stale one.
STALLED_JOBS = """
SELECT j.id, j.attempts, j.args->>'job_id' AS job_id
  FROM procrastinate_jobs j
  LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
 WHERE j.queue_name = %(queue)s
   AND j.status = 'doing'
   AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(seconds)s))
   FOR UPDATE OF j SKIP LOCKED
"""

REGISTER_WORKER = "SELECT worker_id FROM procrastinate_register_worker_v1()"
UNREGISTER_WORKER = "SELECT procrastinate_unregister_worker_v1(%(worker)s)"
HEARTBEAT = "SELECT procrastinate_update_heartbeat_v1(%(worker)s)"
PRUNE_WORKERS = "SELECT worker_id FROM procrastinate_prune_stalled_workers_v1(%(seconds)s)"
RETRY_JOB = "SELECT procrastinate_retry_job_v2(%(id)s, NULL, NULL, NULL, NULL)"
FINISH_JOB = "SELECT procrastinate_finish_job_v1(%(id)s, %(status)s, false)"

DESCRIBE_WORKER = """
INSERT INTO imagine_pool_workers (worker_id, host, pid, device, gpu, model_id, queue_name)
VALUES (%(worker)s, %(host)s, %(pid)s, %(device)s, %(gpu)s, %(model)s, %(queue)s)
"""

#: A claimed job, locked, still ours to finish (a janitor may have re-queued it meanwhile).
OWN_JOB = """
SELECT abort_requested FROM procrastinate_jobs
 WHERE id = %(id)s AND status = 'doing' AND worker_id = %(worker)s
   FOR UPDATE
"""

ABORT_REQUESTED = """
SELECT id FROM procrastinate_jobs WHERE id = ANY(%(ids)s) AND abort_requested
"""

SAVE_RESULT = """
INSERT INTO imagine_pool_results (job_id, procrastinate_id, status, meta, images)
VALUES (%(job_id)s, %(id)s, %(status)s, %(meta)s, %(images)s)
ON CONFLICT (job_id) DO UPDATE
   SET procrastinate_id = EXCLUDED.procrastinate_id, status = EXCLUDED.status,
       meta = EXCLUDED.meta, images = EXCLUDED.images, created_at = now()
"""

#: The states of this process's jobs, by the bot's job ids (newest row of each).
JOB_STATES = """
SELECT DISTINCT ON (j.args->>'job_id') j.args->>'job_id', j.status::text, r.meta
  FROM procrastinate_jobs j
  LEFT JOIN imagine_pool_results r ON r.job_id = j.args->>'job_id'
 WHERE j.args->>'job_id' = ANY(%(job_ids)s) AND j.queue_name = %(queue)s
 ORDER BY j.args->>'job_id', j.id DESC
"""

#: The newest procrastinate job of a bot job id, whatever its state (re-attaching).
FIND_JOB = """
SELECT id FROM procrastinate_jobs
 WHERE args->>'job_id' = %(job_id)s AND queue_name = %(queue)s AND task_name = %(task)s
 ORDER BY id DESC LIMIT 1
"""

READ_RESULT = "SELECT meta, images FROM imagine_pool_results WHERE job_id = %(job_id)s"
DELETE_RESULT = "DELETE FROM imagine_pool_results WHERE job_id = %(job_id)s"

COUNTS = """
SELECT count(*) FILTER (WHERE status = 'todo') AS waiting,
       count(*) FILTER (WHERE status = 'doing') AS running
  FROM procrastinate_jobs
 WHERE queue_name = %(queue)s AND status IN ('todo', 'doing')
"""

WORKERS = """
SELECT d.worker_id, d.host, d.pid, d.device, d.gpu, d.model_id,
       extract(epoch FROM now() - w.last_heartbeat) AS silent_seconds,
       (SELECT count(*) FROM procrastinate_jobs j
         WHERE j.worker_id = d.worker_id AND j.status = 'doing') AS running
  FROM imagine_pool_workers d
  JOIN procrastinate_workers w ON w.id = d.worker_id
 WHERE d.queue_name = %(queue)s
   AND w.last_heartbeat > now() - make_interval(secs => %(seconds)s)
 ORDER BY d.worker_id
"""
