"""The database: tables, migrations, reads, event rows, the recorder and the lock that
keeps one live service per database and node."""
