-- The database role Baton's runtime needs, and nothing more (docs/reliability.md, "Privileges").
-- Run as a role that may create roles (e.g. postgres), once per schema Baton uses:
--   psql "postgres://postgres@127.0.0.1:5432/test" -v schema=baton -v role=baton_app -f docs/pg-restricted-role.sql
-- The schema must already be migrated by its owner (any process opening Baton's storage as the owner does that).

-- A login role: no superuser, no CREATEDB, no CREATEROLE, no replication, owns nothing.
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec

-- Runtime: find the schema, read and write Baton's tables, take sequence numbers. LISTEN / NOTIFY and advisory locks
-- need no grant. Nothing here allows CREATE, ALTER, DROP or TRUNCATE.
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'schema', :'role') \gexec
SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', :'schema', :'role') \gexec
SELECT format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', :'schema', :'role') \gexec
