"""The web console's flows in Debian's headless Chromium (Selenium, chromedriver from Debian).

Run by crates/ibs/tests/console_browser.rs against a real `ibs serve` with a real repository; the
environment names the server (IBS_URL), an admin and a reader token, the data directory, the first
backup's job id and where to write screenshots. Any failed check raises: the Rust test fails.
A missing chromium or chromedriver is a failure, never a skip.
"""

import http.client
import json
import os
import shutil
import sqlite3
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["IBS_URL"]
ADMIN = os.environ["IBS_ADMIN"]
READER = os.environ["IBS_READER"]
DATA = os.environ["IBS_DATA"]
FIRST = os.environ["IBS_FIRST"]
SHOTS = os.environ["IBS_SHOTS"]
DOCS = os.environ.get("IBS_DOCS")
HOST = urllib.parse.urlparse(URL)
WAIT = 180


def request(method, path, headers=None, body=""):
    c = http.client.HTTPConnection(HOST.hostname, HOST.port, timeout=60)
    c.request(method, path, body=body.encode(), headers=headers or {})
    r = c.getresponse()
    data = r.read().decode("utf-8", "replace")
    return r.status, r.getheader("Location", ""), data


def api(path):
    status, _, body = request("GET", path, {"Authorization": "Bearer " + ADMIN})
    assert status == 200, (path, status, body)
    return json.loads(body)


def age_backup(job_id, days):
    """Ages backup job `job_id` by `days` in the state database, as if it had run that long ago."""
    db = sqlite3.connect(os.path.join(DATA, "state.sqlite"), timeout=30)
    secs = days * 86400
    n = db.execute(
        "UPDATE jobs SET created_at = created_at - ?1, body = json_set(body,"
        " '$.created_at', json_extract(body, '$.created_at') - ?1,"
        " '$.started_at', json_extract(body, '$.started_at') - ?1,"
        " '$.finished_at', json_extract(body, '$.finished_at') - ?1) WHERE id = ?2",
        (secs, job_id),
    ).rowcount
    db.commit()
    db.close()
    assert n == 1, n


for tool in ("chromium", "chromedriver"):
    if not shutil.which(tool):
        sys.exit(f"{tool} is missing: run scripts/ensure-deps.sh (Debian packages chromium, chromium-driver)")

opts = webdriver.ChromeOptions()
opts.binary_location = shutil.which("chromium")
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,800", "--lang=en-US"):
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
# chromedriver on a free port chosen by Selenium (port 0), never a fixed one.
d = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
wait = WebDriverWait(d, WAIT)


def go(path):
    d.get(URL + path)


def path():
    return urllib.parse.urlparse(d.current_url).path


def find(css):
    return wait.until(lambda _: d.find_element(By.CSS_SELECTOR, css))


def text(css):
    return find(css).text


def click(css):
    find(css).click()


def fill(css, value):
    e = find(css)
    e.clear()
    e.send_keys(value)


def no_console_errors(page):
    severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"console errors on {page}: {severe}"


def shot(name):
    no_console_errors(name)
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))
    if DOCS:
        d.save_screenshot(os.path.join(DOCS, name + ".png"))


def credentials():
    cookie = d.get_cookie("ibs_session")["value"]
    csrf = d.execute_script("return document.querySelector('meta[name=csrf-token]').content")
    return cookie, csrf


try:
    # Sign in: an unknown visitor is sent to the sign-in page; a wrong token is refused.
    go("/")
    assert path() == "/signin", path()
    shot("signin")
    fill("#token", "not-a-token")
    click("#signin")
    assert "not valid" in text("#token-error")
    # The refused sign-in answers 401, which Chromium logs as a failed load: expected here, and
    # the only entry allowed.
    log = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert all("/signin" in e["message"] and "401" in e["message"] for e in log), log
    fill("#token", ADMIN)
    click("#signin")
    wait.until(lambda _: path() == "/")

    # The overview shows the latest backup.
    assert FIRST in text("#last-backup"), text("#last-backup")
    shot("overview")

    # Backup now, and watch it complete (the page polls and reloads).
    go("/backups")
    assert FIRST in text("#backups")
    charts = d.execute_script(
        "return Array.from(document.querySelectorAll('.charts img')).map(i => i.complete && i.naturalWidth > 0)")
    assert charts == [True, True], charts
    shot("backups")
    click("#backup-now")
    wait.until(lambda _: path().startswith("/backups/") and path() != "/backups/now")
    new_id = path().split("/")[-1]
    assert new_id != FIRST
    end = time.time() + WAIT
    while True:
        st = text("#job-status")
        if st == "Succeeded":
            break
        assert st in ("Queued", "Running", ""), f"the backup ended {st}"
        assert time.time() < end, "the backup did not complete"
        time.sleep(0.3)
    assert "sample" in text("#components")
    shot("backup")

    # An invalid frequency: the API's message beside the field, nothing saved.
    go("/settings")
    shot("settings")
    fill("#frequency_hours", "99")
    click("#save-settings")
    err = text("#frequency_hours-error")
    assert "frequency_hours" in err, err
    shot("settings-invalid")
    assert api("/api/v1/location")["frequency_hours"] == 12

    # Lowering retention asks for confirmation listing what it deletes (the first backup, aged to
    # ten days old in the state database).
    age_backup(FIRST, 10)
    go("/settings")
    fill("#retention_days", "3")
    click("#save-settings")
    assert FIRST in text("#would-delete")
    assert api("/api/v1/location")["retention_days"] == 7, "applied before confirmation"
    shot("settings-confirm")
    click("#confirm-retention")
    wait.until(lambda _: path() == "/settings")
    find("#settings-form")
    assert api("/api/v1/location")["retention_days"] == 3

    # Close an alert: turning the scheduler off raises one.
    click("#scheduler_enabled")
    click("#save-settings")
    wait.until(lambda _: api("/api/v1/location")["scheduler_enabled"] is False)
    go("/")
    assert "the scheduler is off" in text("#next-backup")
    go("/alerts")
    alert = find("article.alert")
    alert_id = alert.get_attribute("id")
    assert len(text(f"#{alert_id} .remediation")) > 10, "remediation shown"
    shot("alerts")
    click(f"#{alert_id} .close-alert")
    wait.until(lambda _: path() == "/alerts")
    go("/alerts?state=all")
    assert "(closed)" in text(f"#{alert_id}"), text(f"#{alert_id}")
    shot("alerts-closed")

    # Sign out: the old session cookie no longer works.
    old_cookie, _ = credentials()
    click("#signout")
    wait.until(lambda _: path() == "/signin")
    status, location, _ = request("GET", "/", {"Cookie": "ibs_session=" + old_cookie})
    assert (status, location) == (303, "/signin"), (status, location)

    # A reader sees no write controls; a forged POST with the reader's session gets 403.
    fill("#token", READER)
    click("#signin")
    wait.until(lambda _: path() == "/")
    for page in ("/", "/backups", "/alerts?state=all", "/settings"):
        go(page)
        find("main")
        n = len(d.find_elements(By.CSS_SELECTOR, "main form, main button, main input"))
        assert n == 0, f"{n} write controls on {page} for a reader"
        no_console_errors(page)
    go("/")
    shot("overview-reader")
    cookie, csrf = credentials()
    headers = {"Cookie": "ibs_session=" + cookie,
               "Content-Type": "application/x-www-form-urlencoded"}
    before = len(api("/api/v1/backups"))
    for target, body in (("/backups/now", f"csrf={csrf}"),
                         ("/settings", f"csrf={csrf}&frequency_hours=2&retention_days=30"),
                         (f"/alerts/{alert_id.removeprefix('alert-')}/close", f"csrf={csrf}")):
        status, _, page = request("POST", target, headers, body)
        assert status == 403, (target, status, page)
    assert len(api("/api/v1/backups")) == before
    assert api("/api/v1/location")["frequency_hours"] == 12

    # A narrow (phone) screen.
    d.set_window_size(390, 844)
    go("/")
    shot("overview-phone")
    print("console flows: all passed")
finally:
    d.quit()
