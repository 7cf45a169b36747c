-- glacierd catalog, version 5: the scheduled time a backup was started for.
--
-- Catch-up and /health decide whether a scheduled run was missed by comparing cron times
-- (the daemon's clock) with the last backup. started_at comes from the database server's
-- clock, which may run a few milliseconds behind: a backup started for 03:00 could be
-- recorded at 02:59:59.995 and look as if the 03:00 run never happened. A scheduled or
-- catch-up backup records the cron time it ran for here, from the daemon's own clock.
ALTER TABLE {schema}.backups ADD COLUMN scheduled_for timestamptz;
