-- A job's outcomes are ordered by (replay, attempts, rank of its status); the two columns
-- that only copied the attempt number and the status's rank go. The rank matches
-- webhook_router.jobs.RANK.

CREATE FUNCTION webhook_router_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE status WHEN 'Queued' THEN 0 WHEN 'In Progress' THEN 1 ELSE 2 END;

ALTER TABLE webhook_jobs DROP COLUMN version_attempt, DROP COLUMN version_rank;
