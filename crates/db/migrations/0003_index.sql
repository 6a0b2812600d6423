-- The metadata index: what the bucket's links say, so that GC's mark, accounting and the
-- catalog read it instead of listing the bucket. Kept in step by watching every write to the
-- bucket (a link's row is written before the link and removed after it, so the index never
-- lacks a link the bucket has); rebuilt from the bucket by `berth db import` and
-- `berth fsck --repair`. `at` is when the row was last written, in the database's clock: for
-- a revision, when its link was written (GC's untagged policy counts from there); for every
-- row, whether a reconciliation may remove it (only rows older than the listing it compares).
-- Names and digests are stored as text, as the bucket spells them.

-- Tags: a tag's current link, and the manifest it points at. While a tag is being moved, it
-- has a row for its new manifest (written before the link) and one for its old one (removed
-- once the link is written): if the write fails, both stay roots, and GC keeps too much
-- rather than collect the manifest the tag still points at.
CREATE TABLE index_tags (
    repo   text NOT NULL,
    tag    text NOT NULL,
    digest text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, tag, digest)
);

-- Revision links: the manifests a repository holds.
CREATE TABLE index_revisions (
    repo   text NOT NULL,
    digest text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, digest)
);

-- Layer links: the blobs a repository may serve.
CREATE TABLE index_layers (
    repo   text NOT NULL,
    digest text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, digest)
);

-- Uploads in progress (their `startedat`), so GC finds stale ones without listing.
CREATE TABLE index_uploads (
    repo text NOT NULL,
    id   text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo, id)
);

-- Blob data in the blob store, with its size: the candidates of GC's sweep, and the sizes of
-- accounting. A row is written after the data (a blob the index lacks is never swept: a leak
-- until reconciled, never a break).
CREATE TABLE index_blobs (
    digest text PRIMARY KEY,
    size   bigint NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);

-- What a manifest references. Immutable (a function of the digest), learnt when GC or
-- accounting first reads the manifest, dropped with its blob.
CREATE TABLE index_manifests (
    digest   text PRIMARY KEY,
    size     bigint NOT NULL,
    blobs    text[] NOT NULL,
    children text[] NOT NULL,
    subject  text
);

-- Whether the index may stand in for listing the bucket: set by a completed import or
-- repair, cleared when a check finds it lacking links the bucket has.
CREATE TABLE index_state (
    id          int PRIMARY KEY CHECK (id = 1),
    ready       boolean NOT NULL DEFAULT false,
    imported_at timestamptz
);
INSERT INTO index_state (id) VALUES (1);
