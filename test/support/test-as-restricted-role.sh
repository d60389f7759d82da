#!/usr/bin/env bash
# Runs the whole test suite against Postgres as a restricted role (docs/reliability.md, "Running the suite as the
# restricted role"). The role is a plain LOGIN role (no superuser, no CREATEDB, no CREATEROLE).
#
# What the TESTS need beyond the runtime grants: every test file creates (and owns) its own fresh schema, so the role
# gets CREATE on the test database. A deployment does not: there the owner migrates once and the runtime role gets
# only docs/pg-restricted-role.sql. (test/RestrictedRole.test.ts checks exactly that runtime set, as ADMIN_URL.)
#
# Usage: npm run test:restricted-role -- [vitest args...]
#   ADMIN_URL   a role that can create roles (default postgres://postgres@127.0.0.1:5432/test)
#   ROLE        the restricted role (default baton_app)
set -euo pipefail
ADMIN_URL="${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
ROLE="${ROLE:-baton_app}"
DB="$(node -e 'console.log(new URL(process.argv[1]).pathname.slice(1))' "$ADMIN_URL")"
APP_URL="$(node -e 'const u = new URL(process.argv[1]); u.username = process.argv[2]; u.password = ""; console.log(u.toString())' "$ADMIN_URL" "$ROLE")"

node --input-type=module - "$ADMIN_URL" "$ROLE" "$DB" <<'JS'
import pg from "pg"
const [url, role, db] = process.argv.slice(2)
const client = new pg.Client({ connectionString: url })
await client.connect()
const esc = (name) => client.escapeIdentifier(name)
const exists = await client.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [role])
if (exists.rowCount === 0) {
  await client.query(`CREATE ROLE ${esc(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS`)
}
// Test-only: per-file schemas. Not a runtime privilege.
await client.query(`GRANT CREATE ON DATABASE ${esc(db)} TO ${esc(role)}`)
const { rows } = await client.query(
  "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
  [role]
)
console.log(`role ${role}: ${JSON.stringify(rows[0])}; CREATE on database ${db} (for the tests' own schemas)`)
await client.end()
JS

# Take the test-only privilege back afterwards (the schemas the role created stay its own; globalSetup drops stale
# test schemas as the admin role).
revoke() {
  node --input-type=module - "$ADMIN_URL" "$ROLE" "$DB" <<'JS'
import pg from "pg"
const [url, role, db] = process.argv.slice(2)
const client = new pg.Client({ connectionString: url })
await client.connect()
await client.query(`REVOKE CREATE ON DATABASE ${client.escapeIdentifier(db)} FROM ${client.escapeIdentifier(role)}`)
await client.end()
JS
}
trap revoke EXIT

# test/RestrictedRole.test.ts creates its runtime role as ADMIN_URL (BATON_TEST_ADMIN_PG_URL); under
# BATON_REQUIRE_PG=1 it fails rather than skip when it cannot.
echo "running: BATON_TEST_PG_URL=$APP_URL BATON_TEST_ADMIN_PG_URL=$ADMIN_URL BATON_REQUIRE_PG=1 npx vitest run $*"
BATON_TEST_PG_URL="$APP_URL" BATON_TEST_ADMIN_PG_URL="$ADMIN_URL" BATON_REQUIRE_PG=1 npx vitest run "$@"
