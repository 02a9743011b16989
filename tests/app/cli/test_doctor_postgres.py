"""``timer-service doctor`` on PostgreSQL (a private server of the test's own): it opens
the database, reads its migrations and the server's clock, never prints the password,
and a server that hangs (SIGSTOP) is a fail within the check's time, not a hang."""

from __future__ import annotations

from tests.app.cli.doctor_command import DoctorRun
from tests.private_postgres import PASSWORD, PrivatePostgres, private_postgres

__all__ = ["private_postgres"]  # the fixture, used below by name


def _doctor(url: str) -> DoctorRun:
    # In the environment, not the command line, as the service's docs say.
    return DoctorRun("--no-capture-stacks", env={"TIMER_SERVICE_DB_URL": url})


def test_postgres_opens_and_its_clock_is_compared(private_postgres: PrivatePostgres) -> None:
    doctored = _doctor(private_postgres.url).finish()
    assert doctored.returncode == 0, doctored.stdout + doctored.stderr
    assert PASSWORD not in doctored.stdout + doctored.stderr
    database = doctored.result("database")
    assert database["status"] == "ok" and "postgresql+psycopg://postgres:***@" in database["found"]
    assert doctored.result("migrations")["status"] == "ok"
    clock = doctored.result("clock vs database")
    # The same host's clock, read twice: well within the second allowed.
    assert clock["status"] == "ok" and "the server's" in clock["found"], clock
    # Nothing of SQLite's is said about a server's database.
    assert not [r for r in doctored.results if r["name"] == "disk space"]


def test_a_hung_postgres_fails_and_does_not_hang_doctor(private_postgres: PrivatePostgres) -> None:
    stopped = private_postgres.hang()
    try:
        doctored = _doctor(private_postgres.url).finish()
    finally:
        private_postgres.resume(stopped)
    result = doctored.only_failure("database")
    assert PASSWORD not in doctored.stdout + doctored.stderr
    assert result["found"].startswith(
        "cannot reach the database postgresql+psycopg://postgres:***@"
    )
    assert "pg_isready" in result["fix"]
