"""A real browser logs into the admin after a load run and reads the stats chart."""

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHASES = ((80, 15), (40, 10))  # (requests, events per request) in two minutes
BAD_REQUESTS = 6
PAGE_WAIT_S = 40
PAGE_POLL_S = 1.0
PASSWORD = "browser-test-password"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (bash .ci/services installs them)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium: pip install -r requirements-dev.txt"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1300")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def load_phase(stack, topic: str, *, requests: int, events_per_request: int) -> int:
    """Send events the way a client would and return how many the gateway accepted."""

    def post(n):
        events = [{"n": n, "i": i, "key": f"user-{i % 9}"} for i in range(events_per_request)]
        status, _, body = stack.post_json(f"/api/v1/events/{topic}", events)
        assert status == 202, body
        return body["accepted"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        return sum(pool.map(post, range(requests)))


def reject(stack, topic: str, *, requests: int) -> int:
    for _ in range(requests):
        status, _, _ = stack.request(
            "POST", f"/api/v1/events/{topic}", b"{not json", {"Content-Type": "application/json"}
        )
        assert status == 400
    return requests


def load_run(stack, topic: str) -> dict:
    """Two phases of different sizes in two different minutes, so the chart draws a curve."""
    accepted = load_phase(stack, topic, requests=PHASES[0][0], events_per_request=PHASES[0][1])
    rejected = reject(stack, topic, requests=BAD_REQUESTS)
    time.sleep(60 - time.time() % 60 + 0.5)  # into the next minute: at most a minute's wait
    accepted += load_phase(stack, topic, requests=PHASES[1][0], events_per_request=PHASES[1][1])
    rejected += reject(stack, topic, requests=BAD_REQUESTS // 2)
    return {"accepted": accepted, "rejected": rejected}


def test_admin_stats_page_shows_the_load_run(stack_factory, browser, tmp_path):
    stack = stack_factory()
    stack.start_worker()
    stack.start_server("--threads", "16")
    stack.env["DJANGO_SUPERUSER_PASSWORD"] = PASSWORD
    stack.run_manage(
        "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"
    )

    counts = load_run(stack, f"browser-{uuid.uuid4().hex[:8]}")
    assert counts["accepted"] == sum(requests * events for requests, events in PHASES)
    stack.wait_for_drain(timeout=60)

    base = f"http://127.0.0.1:{stack.port}"
    browser.get(f"{base}/admin/login/?next=/admin/ingest/eventstat/")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login POST must finish before the next navigation, or that navigation cancels it.
    WebDriverWait(browser, PAGE_WAIT_S).until(
        expected_conditions.presence_of_element_located((By.ID, "total-accepted"))
    )

    def totals():
        return {
            name: int(browser.find_element(By.ID, f"total-{name}").text)
            for name in ("accepted", "delivered", "rejected")
        }

    expected = {
        "accepted": counts["accepted"],
        "delivered": counts["accepted"],
        "rejected": counts["rejected"],
    }

    def page_totals() -> dict:
        browser.get(f"{base}/admin/ingest/eventstat/?range=hour")
        return totals()

    # Counters reach the database within a flush interval or two.
    wait_until(
        lambda: page_totals() == expected,
        timeout=PAGE_WAIT_S,
        interval=PAGE_POLL_S,
        message=lambda: f"the page shows {totals()}, the client saw {expected}",
    )

    chart = browser.find_element(By.CSS_SELECTOR, "#chart svg.ingest-chart")
    assert chart.is_displayed()
    assert chart.size["width"] > 500 and chart.size["height"] > 200
    points = {
        series: browser.find_elements(By.CSS_SELECTOR, f"#chart circle.point-{series}")
        for series in ("accepted", "delivered", "rejected")
    }
    assert len(points["accepted"]) >= 2 and points["delivered"] and points["rejected"]
    for series, expected_total in (
        ("accepted", counts["accepted"]),
        ("delivered", counts["accepted"]),
        ("rejected", counts["rejected"]),
    ):
        plotted = sum(int(point.get_attribute("data-value")) for point in points[series])
        assert plotted == expected_total, series
    assert all(point.is_displayed() for point in points["accepted"])
    row = browser.find_element(By.CSS_SELECTOR, "tr.topic-row td.accepted")
    assert int(row.text) == counts["accepted"]

    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", chart)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "admin-stats.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot} ({os.path.getsize(screenshot)} bytes), points: "
          f"{ {series: len(found) for series, found in points.items()} }")  # fmt: skip

    browser.get(f"{base}/admin/ingest/eventstat/?range=day")
    assert int(browser.find_element(By.ID, "total-accepted").text) == counts["accepted"]
    assert browser.find_elements(By.CSS_SELECTOR, "#chart circle.point-accepted")
