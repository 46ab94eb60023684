"""Catalog ingestion, the pure core: feed rows in, images and manifests in the lake out.

    sources.feeds.read_feed -> plan.plan_ingestion -> batch.ingest_batch (per chunk, threads for
    I/O) -> run.finish_ingestion

Incremental by design. Each catalog row remembers a cheap `source_fingerprint` (size + mtime,
ETag, ...). On the next run a row whose fingerprint, URI and labels are unchanged is neither
read nor written. A row whose bytes changed, or whose labels changed, gets `version + 1`; every
version stays in the catalog manifest, and `current_catalog` picks the latest per SKU. A file
that was only touched (new fingerprint, same bytes) keeps its version; its fingerprint is
updated in place. Manifests are written only when something changed, so a second run over the
same feed writes nothing at all.

A bad row never stops the run: it becomes a quarantine record naming the SKU, the feed row, the
URI, the reason (one of `QUARANTINE_REASONS`) and a detail. Only a bad feed (unreadable, a
required column missing) or a failing lake stops it.
"""
