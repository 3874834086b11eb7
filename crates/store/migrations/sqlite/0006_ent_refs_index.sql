-- Objects attached to an object are found by (connection, ref_id): the index also carries
-- object_id, so it covers that lookup, and SQLite's planner (no statistics on a fresh
-- database) picks it over the primary key, which it used to scan connection-wide.
DROP INDEX ent_object_refs_by_ref;
CREATE INDEX ent_object_refs_by_ref ON ent_object_refs (connection_id, ref_id, object_id);
