-- glacierd catalog, version 2: persisted restore requests and safety snapshots.

-- The user tables a backup's dump holds (recorded at backup time, so a dry run can show
-- them before the dump is retrieved from Glacier).
ALTER TABLE {schema}.backups ADD COLUMN tables jsonb;

-- A local pg_dump of the database taken just before a restore changes it.
CREATE TABLE {schema}.snapshots (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    path        text NOT NULL,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    database_name text,
    reason      text NOT NULL                       -- e.g. "before restore 7 of backup 3"
);

CREATE TABLE {schema}.restores (
    id          bigserial PRIMARY KEY,
    -- exactly one source: a backup (needs retrieval) or a snapshot (already local)
    backup_id   bigint REFERENCES {schema}.backups (id) ON DELETE SET NULL,
    snapshot_id bigint REFERENCES {schema}.snapshots (id) ON DELETE SET NULL,
    state       text NOT NULL DEFAULT 'requested'
                CHECK (state IN ('requested', 'retrieving', 'fetching', 'restoring',
                                 'restored', 'failed')),
    options     jsonb NOT NULL,                      -- tier, database, files
    -- progress inside "restoring", so a restart resumes without redoing what must be
    -- done once (the safety snapshot above all)
    steps       jsonb NOT NULL DEFAULT '{}',
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX restores_active ON {schema}.restores (state)
    WHERE state NOT IN ('restored', 'failed');

-- The archives a restore needs (its database dump and the files missing on disk).
CREATE TABLE {schema}.restore_archives (
    restore_id  bigint NOT NULL REFERENCES {schema}.restores (id) ON DELETE CASCADE,
    archive_id  bigint NOT NULL REFERENCES {schema}.archives (id) ON DELETE CASCADE,
    PRIMARY KEY (restore_id, archive_id)
);
