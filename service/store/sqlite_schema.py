"""SQLite's schema, one migration a version (``PRAGMA user_version`` counts those applied), and
the settings of every connection."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: list order and cursor
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
        created_at REAL NOT NULL,               -- epoch seconds
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_state_seq ON jobs (state, seq);
    CREATE INDEX jobs_task_seq ON jobs (task, seq);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the SSE id
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        data TEXT NOT NULL                      -- JSON
    );
    CREATE INDEX events_job_id ON events (job_id, id);
    """,
    """
    ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';  -- JSON: JobOptions
    """,
    """
    ALTER TABLE jobs ADD COLUMN scheduled_at REAL;  -- epoch seconds: when it becomes due
    """,
    """
    ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';  -- JSON: ended runs
    """,
    """
    ALTER TABLE jobs ADD COLUMN key TEXT;
    -- no two unfinished jobs share a key (the writer checks first; this makes sure)
    CREATE UNIQUE INDEX jobs_active_key ON jobs (key)
        WHERE key IS NOT NULL AND state IN ('scheduled', 'queued', 'running');
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,                   -- the Idempotency-Key header
        request TEXT NOT NULL,                  -- a digest of the request it came with
        job_ids TEXT NOT NULL,                  -- JSON: the jobs that request created
        created_at REAL NOT NULL
    );
    CREATE INDEX idempotency_created_at ON idempotency (created_at);
    CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    """,
    """
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        cron TEXT NOT NULL,
        args TEXT NOT NULL,                     -- JSON
        kwargs TEXT NOT NULL,                   -- JSON
        options TEXT NOT NULL,                  -- JSON: JobOptions, over the task's own
        source TEXT NOT NULL,                   -- 'api' (POST /schedules) or 'task' (@task(cron=))
        created_at REAL NOT NULL,               -- epoch seconds; the first tick comes after it
        last_tick_at REAL                       -- epoch seconds: the latest tick that made a job
    );
    """,
    """
    CREATE TABLE job_logs (                     -- the newest CONVEYOR_MAX_LOG_LINES of each job
        id INTEGER PRIMARY KEY,                 -- arrival order
        job_id TEXT NOT NULL,
        event_id INTEGER NOT NULL,              -- the "log" event that carried it
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,                       -- epoch seconds
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
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE schedules ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;  -- 1: makes no jobs
    -- epoch seconds: the latest resume; the ticks before it make no job
    ALTER TABLE schedules ADD COLUMN resumed_at REAL;
    """,
    """
    ALTER TABLE jobs ADD COLUMN schedule_id TEXT;  -- the schedule whose tick made it, if any
    CREATE INDEX jobs_schedule_seq ON jobs (schedule_id, seq) WHERE schedule_id IS NOT NULL;
    """,
    """
    CREATE TABLE readiness (                    -- one row, written by each readiness check
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at REAL NOT NULL                -- epoch seconds
    );
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
        next_at REAL NOT NULL                 -- epoch seconds
    );
    CREATE TABLE workflows (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,             -- epoch seconds
        output TEXT NOT NULL                    -- JSON: its result, from its jobs' results
    );
    -- each unfinished job a job waits for: a job that finishes finds its dependents here
    CREATE TABLE dependencies (
        depends_on TEXT NOT NULL,
        job_id TEXT NOT NULL,
        PRIMARY KEY (depends_on, job_id)
    ) WITHOUT ROWID;
    CREATE INDEX dependencies_job_id ON dependencies (job_id);
    -- a waiting job is unfinished too: it holds its key
    DROP INDEX jobs_active_key;
    CREATE UNIQUE INDEX jobs_active_key ON jobs (key)
        WHERE key IS NOT NULL AND state IN ('waiting', 'scheduled', 'queued', 'running');
    """,
)

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # durable across process crashes; one fsync per checkpoint
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
)
