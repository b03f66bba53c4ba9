-- dmb_next_id took a session-level advisory lock and released it in an exception handler.
-- `EXCEPTION WHEN OTHERS` does not catch QUERY_CANCELED, so a statement cancelled (statement
-- timeout, pg_cancel_backend) while the lock was held left it held by that pooled session, and
-- every insert in the cluster then waited on it forever. A transaction-level lock is released
-- by Postgres itself at COMMIT or ROLLBACK, whatever ended the statement. The cost: the lock is
-- held until the caller's transaction ends, so transactions that insert must stay short (they
-- are: one statement or a few, see docs/ARCHITECTURE.md).

CREATE OR REPLACE FUNCTION dmb_next_id() RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    clock_id bigint := (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
                        - 1735689600000) << 12;
    next_id  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7236196);  -- 0x6e6964 "nid": released at COMMIT/ROLLBACK
    SELECT greatest(last_value + 1, clock_id) INTO next_id FROM dmb_id_seq;
    PERFORM setval('dmb_id_seq', next_id);
    RETURN next_id;
END
$$;
