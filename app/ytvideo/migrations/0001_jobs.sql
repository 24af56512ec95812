-- compatible: true
-- The job store as the first release created it (CREATE ... IF NOT EXISTS, so
-- a database made before migrations existed adopts it unchanged).
CREATE TABLE IF NOT EXISTS video_jobs (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    script text NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    duration_seconds double precision NOT NULL,
    fps integer NOT NULL,
    queue text NOT NULL,
    image_count integer NOT NULL DEFAULT 0,
    status text NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    lease uuid,
    worker text,
    failure_stage text,
    failure_reason text,
    output_path text,
    encoder text,
    device text,
    narration_provider text,
    cost_dollars double precision,
    cost_breakdown jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    heartbeat_at timestamptz,
    requeued_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS video_jobs_running_heartbeat
    ON video_jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS video_jobs_completed_finished
    ON video_jobs (finished_at) WHERE status = 'completed';
CREATE TABLE IF NOT EXISTS video_job_images (
    job_id uuid NOT NULL REFERENCES video_jobs (id) ON DELETE CASCADE,
    position integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS video_counters (
    name text NOT NULL,
    label text NOT NULL DEFAULT '',
    value bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, label)
);
