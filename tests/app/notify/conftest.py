from tests.app.notify.receiver import receiver  # noqa: F401 - a fixture for these tests
