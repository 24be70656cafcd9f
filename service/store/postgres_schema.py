"""PostgreSQL's schema, one migration a version (``conveyor_schema.version`` counts those
applied). Instances that start together migrate one at a time: each holds ``MIGRATION_LOCK``
(a transaction-scoped advisory lock) while it looks and migrates.

The tables are SQLite's, with the same columns and the same JSON text, so both backends share
``rows.py``; the queue and priority a claim sorts by are columns computed from the options.
"""

from __future__ import annotations

MIGRATION_LOCK = 0x636F6E76  # pg_advisory_xact_lock key: "conv"

CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS conveyor_schema (version INTEGER NOT NULL);"
    "INSERT INTO conveyor_schema (version) SELECT 0 WHERE NOT EXISTS "
    "(SELECT 1 FROM conveyor_schema)"
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        seq BIGSERIAL PRIMARY KEY,              -- submission order: list order and cursor
        id TEXT NOT NULL UNIQUE,
        task TEXT NOT NULL,
        args TEXT NOT NULL,                     -- JSON
        kwargs TEXT NOT NULL,                   -- JSON
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        interruptions INTEGER NOT NULL DEFAULT 0,
        progress TEXT,                          -- JSON or NULL
        result TEXT,                            -- JSON or NULL (no result)
        error TEXT,                             -- JSON or NULL
        created_at DOUBLE PRECISION NOT NULL,   -- epoch seconds
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        options TEXT NOT NULL DEFAULT '{}',     -- JSON: JobOptions
        scheduled_at DOUBLE PRECISION,          -- epoch seconds: when it becomes due
        retries INTEGER NOT NULL DEFAULT 0,
        attempts TEXT NOT NULL DEFAULT '[]',    -- JSON: ended runs
        key TEXT,
        schedule_id TEXT,                       -- the schedule whose tick made it, if any
        queue TEXT GENERATED ALWAYS AS
            (coalesce(options::jsonb ->> 'queue', 'default')) STORED,
        priority INTEGER GENERATED ALWAYS AS
            (coalesce((options::jsonb ->> 'priority')::integer, 0)) STORED
    );
    CREATE INDEX jobs_state_seq ON jobs (state, seq);
    CREATE INDEX jobs_task_seq ON jobs (task, seq);
    CREATE INDEX jobs_schedule_seq ON jobs (schedule_id, seq) WHERE schedule_id IS NOT NULL;
    CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    -- no two unfinished jobs share a key (the writer checks first; this makes sure)
    CREATE UNIQUE INDEX jobs_active_key ON jobs (key)
        WHERE key IS NOT NULL AND state IN ('scheduled', 'queued', 'running');

    CREATE TABLE events (
        id BIGINT PRIMARY KEY,                  -- from event_ids, in commit order: the SSE id
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL                      -- JSON
    );
    CREATE INDEX events_job_id ON events (job_id, id);
    -- the last event id given: each transaction with events takes its ids here, holding the
    -- row until it commits, so ids are committed in their order and a reader that has seen
    -- id N never later finds a smaller one
    CREATE TABLE event_ids (
        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        last BIGINT NOT NULL
    );
    INSERT INTO event_ids (last) VALUES (0);

    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,                   -- the Idempotency-Key header
        request TEXT NOT NULL,                  -- a digest of the request it came with
        job_ids TEXT NOT NULL,                  -- JSON: the jobs that request created
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX idempotency_created_at ON idempotency (created_at);

    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        cron TEXT NOT NULL,
        args TEXT NOT NULL,                     -- JSON
        kwargs TEXT NOT NULL,                   -- JSON
        options TEXT NOT NULL,                  -- JSON: JobOptions, over the task's own
        source TEXT NOT NULL,                   -- 'api' (POST /schedules) or 'task' (@task(cron=))
        created_at DOUBLE PRECISION NOT NULL,   -- epoch seconds; the first tick comes after it
        last_tick_at DOUBLE PRECISION,          -- epoch seconds: the latest tick that made a job
        paused INTEGER NOT NULL DEFAULT 0,      -- 1: makes no jobs
        resumed_at DOUBLE PRECISION             -- the latest resume; ticks before it make none
    );

    CREATE TABLE job_logs (                     -- the newest CONVEYOR_MAX_LOG_LINES of each job
        id BIGSERIAL PRIMARY KEY,               -- arrival order
        job_id TEXT NOT NULL,
        event_id BIGINT NOT NULL,               -- the "log" event that carried it
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,           -- epoch seconds
        stream TEXT NOT NULL,                   -- stdout, stderr or log
        level TEXT,                             -- log records only
        logger TEXT,
        text TEXT NOT NULL
    );
    CREATE INDEX job_logs_job_id ON job_logs (job_id, id);
    CREATE TABLE job_log_counts (
        job_id TEXT PRIMARY KEY,
        kept INTEGER NOT NULL,                  -- its rows in job_logs
        dropped INTEGER NOT NULL                -- its lines no longer (or never) kept
    );

    CREATE TABLE readiness (                    -- one row, written by each readiness check
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at DOUBLE PRECISION NOT NULL    -- epoch seconds
    );
    """,
    """
    -- the services sharing the database: each writes its heartbeat here (the database's clock,
    -- so the hosts' clocks need not agree); a job's instance_id names the service running it
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        workers TEXT NOT NULL DEFAULT '{}'      -- JSON: its pool, as GET /health shows it
    );
    ALTER TABLE jobs ADD COLUMN instance_id TEXT;
    CREATE INDEX jobs_running_instance ON jobs (instance_id) WHERE state = 'running';
    -- what a claim reads: the best queued job, and the scheduled ones as they come due
    CREATE INDEX jobs_ready ON jobs (priority DESC, seq) WHERE state = 'queued';
    CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state = 'scheduled';
    """,
    """
    ALTER TABLE jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';  -- JSON: ids, as submitted
    ALTER TABLE jobs ADD COLUMN on_dependency_failure TEXT NOT NULL DEFAULT 'cancel';
    ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;  -- of those, unfinished
    ALTER TABLE jobs ADD COLUMN input TEXT;  -- JSON: what a workflow's step takes from before it
    ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
    CREATE INDEX jobs_workflow ON jobs (workflow_id, seq) WHERE workflow_id IS NOT NULL;
    -- when the next job under each rate limit ('task:<name>', 'queue:<name>') may start
    CREATE TABLE rate_limits (
        key TEXT PRIMARY KEY,
        next_at DOUBLE PRECISION NOT NULL                 -- epoch seconds
    );
    CREATE TABLE workflows (
        id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,             -- epoch seconds
        output TEXT NOT NULL                    -- JSON: its result, from its jobs' results
    );
    -- each unfinished job a job waits for: a job that finishes finds its dependents here
    CREATE TABLE dependencies (
        depends_on TEXT NOT NULL,
        job_id TEXT NOT NULL,
        PRIMARY KEY (depends_on, job_id)
    );
    CREATE INDEX dependencies_job_id ON dependencies (job_id);
    -- a waiting job is unfinished too: it holds its key
    DROP INDEX jobs_active_key;
    CREATE UNIQUE INDEX jobs_active_key ON jobs (key)
        WHERE key IS NOT NULL AND state IN ('waiting', 'scheduled', 'queued', 'running');
    """,
)
