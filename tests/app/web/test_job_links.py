"""Links to a job's page keep the job id whole, whatever it holds. A job id is text a
worker chose; Jinja's ``urlencode`` left its ``/`` as is, so the server-rendered link
of job ``x/../victim`` resolved, in the browser, to ``/ui/jobs/victim``: another job's
page. Each link here is resolved as a browser does (RFC 3986, dot segments removed)
and followed."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urljoin, urlsplit

from fastapi.testclient import TestClient

HOSTILE_JOB = "x/../victim?a=1#b"
VICTIM = "victim"


def arm(client: TestClient, pid: int, job_id: str, rank: int) -> int:
    body = {
        "pid": pid,
        "scope_id": f"step-{rank}",
        "expires_in": 300,
        "job_id": job_id,
        "rank": rank,
    }
    response = client.post("/timers", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def job_hrefs(html: str) -> list[str]:
    """Every link on the page to a job's page."""
    return [href for href in re.findall(r'href="([^"]*)"', html) if "/ui/jobs/" in href]


def followed(client: TestClient, page_url: str, href: str) -> str:
    """The job page a browser on ``page_url`` reaches by the link ``href``: its job id."""
    resolved = urlsplit(urljoin("http://testserver" + page_url, href.replace("&amp;", "&")))
    answer = client.get(resolved.path + (f"?{resolved.query}" if resolved.query else ""))
    assert answer.status_code == 200, (href, answer.status_code)
    shown = re.search(r'<span class="job-id" id="job-id">([^<]*)</span>', answer.text)
    assert shown is not None, href
    return shown.group(1).replace("&amp;", "&").replace("&#34;", '"')


def test_a_job_id_with_slashes_and_dots_links_to_its_own_page(
    client: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    hostile = arm(client, sleeper.pid, HOSTILE_JOB, 0)
    arm(client, sleeper.pid, VICTIM, 1)
    pages = ["/", f"/ui/timers/{hostile}"]
    for page_url in pages:
        html = client.get(page_url).text
        hrefs = job_hrefs(html)
        assert hrefs, page_url
        reached = {followed(client, page_url, href) for href in hrefs}
        if page_url == "/":
            # The active timers and the jobs overview: each job's own page.
            assert reached == {HOSTILE_JOB, VICTIM}, reached
        else:
            assert reached == {HOSTILE_JOB}, reached
        assert "/ui/jobs/x%2F..%2Fvictim%3Fa%3D1%23b" in hrefs
