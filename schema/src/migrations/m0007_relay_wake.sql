-- The relay is woken after commit by the writers (schema::outbox::RelayWake),
-- no longer from inside their transactions: a NOTIFY in a transaction makes
-- its commit wait on a cluster-wide lock held through the WAL flush, which
-- serialised every writer of the outbox (ADR 0009).
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
