-- compatible: true
-- Accounts: users with hashed passwords and a per-user rate limit; each job
-- belongs to a user and keeps its cost estimate, its deadline and when its
-- media were deleted (retention). Only new
-- tables and nullable columns, so the previous release runs against it.
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    password_hash text NOT NULL,
    rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE video_jobs
    ADD COLUMN user_id bigint REFERENCES users (id),
    ADD COLUMN estimated_cost_dollars double precision,
    ADD COLUMN deadline_at timestamptz,
    ADD COLUMN media_deleted_at timestamptz;
CREATE INDEX video_jobs_user_created ON video_jobs (user_id, created_at DESC);
-- A job its owner cancelled: the old release only reads the status.
ALTER TABLE video_jobs DROP CONSTRAINT video_jobs_status_check;
ALTER TABLE video_jobs ADD CONSTRAINT video_jobs_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled'));
