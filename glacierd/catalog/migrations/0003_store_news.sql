-- glacierd catalog, version 3: store news as a compare-and-set, one active restore at a time.

-- Changes with every retrieval status change and with every answer to our own retrieval
-- request. News from the store (SNS, polling, the request's answer) is applied only if the
-- row still has the generation (and status, and job id) the caller saw before it asked.
ALTER TABLE {schema}.archives
    ADD COLUMN retrieval_generation bigint NOT NULL DEFAULT 0,
    -- true from the moment we claim a retrieval until the store answered our request: news
    -- that the archive is not being retrieved cannot be told from "our request has not
    -- arrived yet", so it is ignored meanwhile.
    ADD COLUMN retrieval_asking boolean NOT NULL DEFAULT false;

-- How many restore_archives rows the request was created with (written in the same
-- transaction), so the driver can tell a complete archive list from a damaged one.
ALTER TABLE {schema}.restores ADD COLUMN archive_count integer;

-- Before this version two restores could be accepted at once (check, then insert). Keep the
-- oldest active one; the others end failed with the reason, so the index below can hold.
UPDATE {schema}.restores
   SET state = 'failed', finished_at = now(), updated_at = now(),
       error = 'another restore was already active when this one was accepted; request it '
               'again once that one has finished.'
 WHERE state NOT IN ('restored', 'failed')
   AND id > (SELECT min(id) FROM {schema}.restores WHERE state NOT IN ('restored', 'failed'));

-- One active restore at a time, enforced by the database itself: a second INSERT while one
-- is active fails, whoever checked what before.
CREATE UNIQUE INDEX restores_one_active ON {schema}.restores ((true))
    WHERE state NOT IN ('restored', 'failed');
