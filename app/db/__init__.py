"""The database: tables, migrations, reads, event rows and the recorder."""
