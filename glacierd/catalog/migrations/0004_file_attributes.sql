-- glacierd catalog, version 4: what a restore needs to put a file back as it was, and
-- catalog paths that can hold any file name.

-- A file's permission bits and modification time (nanoseconds since the epoch) when it was
-- archived; a restore sets them again. NULL for archives made before this version.
ALTER TABLE {schema}.archives ADD COLUMN mode integer, ADD COLUMN mtime_ns bigint;

-- Catalog paths are now escaped text (sources/attachments.py, catalog_path): a literal "%"
-- followed by two hex digits becomes "%25", control characters and U+FFFE/U+FFFF become
-- their UTF-8 bytes as %XX. Rewrite the paths recorded before, so that the next walk finds
-- them again; store keys are left as they are (an archive's key never changes).
UPDATE {schema}.archives SET path = regexp_replace(path, '%([0-9A-Fa-f]{2})', '%25\1', 'g')
WHERE kind = 'file' AND path ~ '%[0-9A-Fa-f]{2}';

DO $$
DECLARE
    code integer;
BEGIN
    FOR code IN SELECT generate_series(1, 31) UNION ALL SELECT 127 LOOP
        UPDATE {schema}.archives
        SET path = replace(path, chr(code), '%' || upper(lpad(to_hex(code), 2, '0')))
        WHERE kind = 'file' AND strpos(path, chr(code)) > 0;
    END LOOP;
    UPDATE {schema}.archives
    SET path = replace(replace(path, chr(65534), '%EF%BF%BE'), chr(65535), '%EF%BF%BF')
    WHERE kind = 'file' AND (strpos(path, chr(65534)) > 0 OR strpos(path, chr(65535)) > 0);
END
$$;
