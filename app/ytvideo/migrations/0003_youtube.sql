-- compatible: true
-- YouTube upload: a user's linked channel (the OAuth refresh token, encrypted
-- by the app with YOUTUBE_TOKEN_KEY, never in clear), and one upload per job
-- that asked for it. New tables only, so the previous release runs against it.
CREATE TABLE youtube_channels (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_encrypted text NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now()
);
-- waiting: to be uploaded once the video is completed and not_before has
-- passed (a quota refusal moves not_before to when the quota resets);
-- uploading: a worker holds the lease; uploaded and failed are final.
CREATE TABLE youtube_uploads (
    job_id uuid PRIMARY KEY REFERENCES video_jobs (id) ON DELETE CASCADE,
    privacy text NOT NULL CHECK (privacy IN ('private', 'unlisted', 'public')),
    status text NOT NULL DEFAULT 'waiting'
        CHECK (status IN ('waiting', 'uploading', 'uploaded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT now(),
    lease uuid,
    started_at timestamptz,
    published_at timestamptz,
    youtube_video_id text,
    error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX youtube_uploads_open ON youtube_uploads (not_before)
    WHERE status IN ('waiting', 'uploading');
