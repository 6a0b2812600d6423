-- Replicas, leases, the touched set and repository generations: what several replicas on one
-- bucket must agree on. Every table here is derived or transient; the bucket is the truth.

-- Each running `berth serve`, renewed every few seconds; a row whose heartbeat is older than
-- its lease belongs to a replica that is gone.
-- `gate_epoch`: the last GC gate request (see gc_state) this replica has passed, i.e. every
-- operation it had in flight when the request came has finished.
CREATE TABLE replicas (
    id           uuid PRIMARY KEY,
    description  text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    gate_epoch   bigint NOT NULL DEFAULT 0
);

-- When each digest was last used by a client (blob HEAD/GET, mount, upload completion,
-- manifest PUT, restore), in the database's clock. GC keeps what was touched within its grace
-- period or since it began.
CREATE TABLE touches (
    digest text PRIMARY KEY,
    at     timestamptz NOT NULL
);
CREATE INDEX touches_at ON touches (at);

-- The running GC, if any: touches at or after `started_at` protect their digests whatever
-- the grace period. `gate_epoch` counts GC's requests to every replica to wait out the
-- operations it has in flight.
CREATE TABLE gc_state (
    id         int PRIMARY KEY CHECK (id = 1),
    started_at timestamptz,
    gate_epoch bigint NOT NULL DEFAULT 0
);
INSERT INTO gc_state (id) VALUES (1);

-- A generation per repository, set to a new value of one sequence after every change of its
-- tags or manifests is written to the bucket (so a value never comes back, even for a
-- repository deleted and pushed again): a replica's cache of what a tag resolves to is good
-- only for the generation it was read under. The row named '' (no repository has that name)
-- changes when a repository appears or goes, for the catalog. Rows are never deleted.
CREATE SEQUENCE generation_seq;
CREATE TABLE generations (
    name       text PRIMARY KEY,
    generation bigint NOT NULL,
    present    boolean NOT NULL
);
