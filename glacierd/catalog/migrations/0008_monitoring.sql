-- glacierd catalog, version 8: what monitoring reads. Lasting counters for /metrics, and an
-- outbox of events (a backup or restore that ended) for the hooks.
--
-- Both are written by triggers, in the same transaction as the change they record: a backup
-- recorded failed always has its event, even if the process dies the next instant, and no
-- code path that ends a backup or restore can forget to count it. The trigger functions
-- name their tables through TG_TABLE_SCHEMA, so they keep working in a renamed schema.

-- Monotonic totals (Prometheus counters) that survive restarts and deleted backups.
CREATE TABLE {schema}.counters (
    name  text PRIMARY KEY,
    value double precision NOT NULL DEFAULT 0
);

-- One row per finished backup or restore.
CREATE TABLE {schema}.events (
    id          bigserial PRIMARY KEY,
    event       text NOT NULL
                CHECK (event IN ('backup.completed', 'backup.failed',
                                 'restore.restored', 'restore.failed')),
    backup_id   bigint,                                -- no foreign key: a deleted backup's
    restore_id  bigint,                                -- events stay as they happened
    reason      text,                                  -- why it failed
    details     jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- false until the daemon queued one delivery per hook configured at that moment
    queued      boolean NOT NULL DEFAULT false
);
CREATE INDEX events_unqueued ON {schema}.events (id) WHERE NOT queued;

-- One delivery of an event to one hook. 'pending' until it succeeded ('sent') or ran out of
-- attempts ('failed'); next_attempt_at is also the lease of the attempt running now.
CREATE TABLE {schema}.hook_deliveries (
    event_id        bigint NOT NULL REFERENCES {schema}.events (id) ON DELETE CASCADE,
    hook            text NOT NULL CHECK (hook IN ('webhook', 'command')),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    finished_at     timestamptz,
    PRIMARY KEY (event_id, hook)
);
CREATE INDEX hook_deliveries_due ON {schema}.hook_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- counters[name] += amount, for each (name, amount).
CREATE FUNCTION {schema}.add_to_counters(target text, names text[], amounts float8[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO %1$I.counters AS c (name, value) SELECT * FROM unnest($1, $2) '
        'ON CONFLICT (name) DO UPDATE SET value = c.value + EXCLUDED.value',
        target)
    USING names, amounts;
END
$$;

CREATE FUNCTION {schema}.backup_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %I.add_to_counters($1, $2, $3)', TG_TABLE_SCHEMA)
    USING TG_TABLE_SCHEMA,
          ARRAY['backups_' || NEW.status, 'backup_seconds_' || NEW.status],
          ARRAY[1, coalesce(extract(epoch FROM NEW.finished_at - NEW.started_at), 0)]::float8[];
    EXECUTE format(
        'INSERT INTO %I.events (event, backup_id, reason, details) VALUES ($1, $2, $3, $4)',
        TG_TABLE_SCHEMA)
    USING 'backup.' || NEW.status, NEW.id, NEW.error,
          jsonb_build_object('trigger', NEW.trigger, 'database', NEW.database_name,
                             'started_at', NEW.started_at, 'finished_at', NEW.finished_at,
                             'file_count', NEW.file_count, 'new_files', NEW.new_files,
                             'bytes_uploaded', NEW.bytes_uploaded);
    RETURN NULL;
END
$$;

CREATE TRIGGER backup_finished AFTER UPDATE OF status ON {schema}.backups
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status IN ('completed', 'failed'))
    EXECUTE FUNCTION {schema}.backup_finished();

CREATE FUNCTION {schema}.restore_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %I.add_to_counters($1, $2, $3)', TG_TABLE_SCHEMA)
    USING TG_TABLE_SCHEMA,
          ARRAY['restores_' || NEW.state, 'restore_seconds_' || NEW.state],
          ARRAY[1, coalesce(extract(epoch FROM NEW.finished_at - NEW.created_at), 0)]::float8[];
    EXECUTE format(
        'INSERT INTO %I.events (event, backup_id, restore_id, reason, details) '
        'VALUES ($1, $2, $3, $4, $5)',
        TG_TABLE_SCHEMA)
    USING 'restore.' || NEW.state, NEW.backup_id, NEW.id, NEW.error,
          jsonb_build_object('snapshot_id', NEW.snapshot_id, 'options', NEW.options,
                             'started_at', NEW.created_at, 'finished_at', NEW.finished_at);
    RETURN NULL;
END
$$;

CREATE TRIGGER restore_finished AFTER UPDATE OF state ON {schema}.restores
    FOR EACH ROW WHEN (OLD.state NOT IN ('restored', 'failed')
                       AND NEW.state IN ('restored', 'failed'))
    EXECUTE FUNCTION {schema}.restore_finished();

-- Objects and bytes uploaded (an archive became stored) and downloaded (it became local).
-- Once per statement, from its transition tables: a batch that marks a thousand archives
-- stored adds to each counter once, not a thousand times.
CREATE FUNCTION {schema}.archives_moved() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    up_objects float8; up_bytes float8; down_objects float8; down_bytes float8;
BEGIN
    SELECT count(*) FILTER (WHERE o.state = 'uploading' AND n.state = 'stored'),
           coalesce(sum(n.size) FILTER (WHERE o.state = 'uploading' AND n.state = 'stored'), 0),
           count(*) FILTER (WHERE o.retrieval_status <> 'local'
                                  AND n.retrieval_status = 'local'),
           coalesce(sum(n.size) FILTER (WHERE o.retrieval_status <> 'local'
                                              AND n.retrieval_status = 'local'), 0)
      INTO up_objects, up_bytes, down_objects, down_bytes
      FROM old_rows o JOIN new_rows n ON n.id = o.id;
    IF up_objects > 0 OR down_objects > 0 THEN
        EXECUTE format('SELECT %I.add_to_counters($1, $2, $3)', TG_TABLE_SCHEMA)
        USING TG_TABLE_SCHEMA,
              ARRAY['uploaded_objects', 'uploaded_bytes', 'downloaded_objects',
                    'downloaded_bytes'],
              ARRAY[up_objects, up_bytes, down_objects, down_bytes];
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER archives_moved AFTER UPDATE ON {schema}.archives
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.archives_moved();

-- What happened before this version, so the totals do not start from zero on an upgrade.
INSERT INTO {schema}.counters (name, value)
SELECT 'backups_' || status, count(*) FROM {schema}.backups
 WHERE status IN ('completed', 'failed') GROUP BY status
UNION ALL
SELECT 'backup_seconds_' || status,
       coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
  FROM {schema}.backups WHERE status IN ('completed', 'failed') GROUP BY status
UNION ALL
SELECT 'restores_' || state, count(*) FROM {schema}.restores
 WHERE state IN ('restored', 'failed') GROUP BY state
UNION ALL
SELECT 'restore_seconds_' || state,
       coalesce(sum(extract(epoch FROM finished_at - created_at)), 0)
  FROM {schema}.restores WHERE state IN ('restored', 'failed') GROUP BY state
UNION ALL
SELECT 'uploaded_objects', count(*) FROM {schema}.archives WHERE state <> 'uploading'
UNION ALL
SELECT 'uploaded_bytes', coalesce(sum(size), 0) FROM {schema}.archives
 WHERE state <> 'uploading'
UNION ALL
SELECT 'downloaded_objects', count(*) FROM {schema}.archives WHERE retrieval_status = 'local'
UNION ALL
SELECT 'downloaded_bytes', coalesce(sum(size), 0) FROM {schema}.archives
 WHERE retrieval_status = 'local';
