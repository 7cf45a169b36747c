-- glacierd catalog, version 1. "{schema}" is replaced by the quoted catalog schema name.

CREATE TABLE {schema}.backups (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'completed', 'failed')),
    trigger       text NOT NULL DEFAULT 'api',        -- api | schedule | catch-up | cli
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text,                                -- why it failed, for operators
    database_name text,
    file_count    integer NOT NULL DEFAULT 0,          -- files the backup references
    new_files     integer NOT NULL DEFAULT 0,          -- files archived by this backup
    skipped_files integer NOT NULL DEFAULT 0,          -- unreadable / vanished / outside root
    bytes_uploaded bigint NOT NULL DEFAULT 0
);

CREATE TABLE {schema}.archives (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('database', 'file')),
    -- 'uploading' until the store confirmed the whole object; only 'stored' archives
    -- are ever referenced by a completed backup. 'deleting': no backup references it any
    -- more and its store object is being removed (recovery finishes the job after a crash).
    state            text NOT NULL DEFAULT 'uploading'
                     CHECK (state IN ('uploading', 'stored', 'deleting')),
    store_name       text NOT NULL,
    store_key        text NOT NULL,
    path             text,                             -- file: path relative to files.root
    size             bigint,
    sha256           text,
    storage_class    text,
    created_by       bigint REFERENCES {schema}.backups (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    retrieval_status text NOT NULL DEFAULT 'available'
                     CHECK (retrieval_status IN ('available', 'pending', 'ready', 'local')),
    retrieval_tier   text,
    retrieval_job_id text,
    retrieval_requested_at timestamptz,
    retrieval_expected_at  timestamptz,
    ready_until      timestamptz,
    local_path       text,                             -- where the fetched copy is
    retrieval_error  text,
    CHECK ((kind = 'file') = (path IS NOT NULL))
);

-- The one set difference per backup reads every stored file archive by path.
CREATE INDEX archives_file_path ON {schema}.archives (path) WHERE kind = 'file';
CREATE INDEX archives_retrieval ON {schema}.archives (retrieval_status)
    WHERE retrieval_status IN ('pending', 'ready');
CREATE UNIQUE INDEX archives_store_key ON {schema}.archives (store_name, store_key)
    WHERE state = 'stored';

-- Which archives a backup consists of: its database dump and every file it references.
-- A file archive belongs to many backups.
CREATE TABLE {schema}.backup_archives (
    backup_id  bigint NOT NULL REFERENCES {schema}.backups (id) ON DELETE CASCADE,
    archive_id bigint NOT NULL REFERENCES {schema}.archives (id),
    PRIMARY KEY (backup_id, archive_id)
);
CREATE INDEX backup_archives_archive ON {schema}.backup_archives (archive_id);
