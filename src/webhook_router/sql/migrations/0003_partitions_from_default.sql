-- Making a month's partition no longer fails when the DEFAULT partition already holds rows
-- of that month (an event dated further ahead than partitions were made): those rows move
-- into the new partition, which is then attached.

CREATE OR REPLACE FUNCTION webhook_router_make_partitions(first date, months integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    start date := date_trunc('month', first)::date;
    stop date;
    tbl text;
    part text;
    cols text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        stop := (start + interval '1 month')::date;
        FOREACH tbl IN ARRAY ARRAY['webhook_jobs', 'webhook_job_attempts'] LOOP
            part := format('%s_%s', tbl, to_char(start, 'YYYY_MM'));
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL)', part, tbl);
                SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
                FROM pg_attribute
                WHERE attrelid = tbl::regclass AND attnum > 0 AND NOT attisdropped
                  AND attgenerated = '';
                EXECUTE format(
                    'WITH moved AS (DELETE FROM %I WHERE event_at >= %L AND event_at < %L'
                    ' RETURNING %s) INSERT INTO %I (%s) SELECT %s FROM moved',
                    tbl || '_default', start, stop, cols, part, cols, cols);
                EXECUTE format(
                    'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    tbl, part, start, stop);
            END IF;
        END LOOP;
        start := stop;
    END LOOP;
END $$;
