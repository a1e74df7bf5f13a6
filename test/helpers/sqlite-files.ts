/**
 * SQLite files as earlier versions of idempo left them, for the tests of the store on them and
 * of their migration.
 */
import { createRequire } from 'node:module';

type Database = new (path: string) => { exec(sql: string): unknown; close(): void };
const Database = createRequire(import.meta.url)('better-sqlite3') as Database;

/** Creates `file` with the records table as stores made it before the rowid layout (clustered by key), then runs `more`. */
export function makeWithoutRowidFile(file: string, ...more: string[]): string {
  const db = new Database(file);
  db.exec(`CREATE TABLE idempo_records (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, state INTEGER NOT NULL, token INTEGER NOT NULL,
    lease_until INTEGER NOT NULL, expires_at INTEGER NOT NULL, steps TEXT, status INTEGER, headers TEXT, body BLOB
  ) WITHOUT ROWID`);
  for (const sql of more) db.exec(sql);
  db.close();
  return file;
}
