from tests.app.notify.alertmanager_process import alertmanager  # noqa: F401 - a fixture
from tests.app.notify.receiver import receiver  # noqa: F401 - a fixture for these tests
from tests.app.notify.smtp_server import mailbox  # noqa: F401 - a fixture for these tests
