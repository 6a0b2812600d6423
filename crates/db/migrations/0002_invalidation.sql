-- Invalidation pushed to replicas: every change is notified on `berth_changed` with its
-- generation, and a writer answers only once every live replica has processed it
-- (`seen_seq`), so replicas can trust what they cached without asking on every read.
ALTER TABLE replicas ADD COLUMN seen_seq bigint NOT NULL DEFAULT 0;
