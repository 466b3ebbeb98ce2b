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
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.ui import WebDriverWait
from selenium.common.exceptions import (StaleElementReferenceException, TimeoutException,
                                        WebDriverException)

URL = os.environ["IBS_URL"]
ADMIN = os.environ["IBS_ADMIN"]
READER = os.environ["IBS_READER"]
DATA = os.environ["IBS_DATA"]
FIRST = os.environ["IBS_FIRST"]
SHOTS = os.environ["IBS_SHOTS"]
DOCS = os.environ.get("IBS_DOCS")
RESTORE_TARGET = os.environ["IBS_RESTORE_TARGET"]
LOCATION2 = os.environ["IBS_LOCATION2"]
DOWNLOADS = os.environ["IBS_DOWNLOADS"]
PFX = os.path.join(DATA, "certs", "ibs-backup.pfx")
CER = os.path.join(DATA, "certs", "ibs-backup.cer")
with open(PFX + ".password") as f:
    PFX_PASSWORD = f.read().strip()
# The browser's time zone is not UTC, so a shown local time differs from the UTC value.
os.environ["TZ"] = "Asia/Kolkata"
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


def api_put(path, body):
    status, _, text = request("PUT", path, {"Authorization": "Bearer " + ADMIN,
                                             "Content-Type": "application/json"}, json.dumps(body))
    assert status == 200, (path, status, text)


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
opts.add_experimental_option("prefs", {"download.default_directory": DOWNLOADS,
                                       "download.prompt_for_download": False})
# chromedriver on a free port chosen by Selenium (port 0), never a fixed one.
d = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
wait = WebDriverWait(d, WAIT)


def go(path):
    d.get(URL + path)


def path():
    return urllib.parse.urlparse(d.current_url).path


def find(css):
    try:
        return WebDriverWait(d, 30).until(lambda _: d.find_element(By.CSS_SELECTOR, css))
    except TimeoutException:
        main = d.find_elements(By.TAG_NAME, "main")
        raise AssertionError(f"{css} not found on {path()}: {main[0].text if main else d.page_source[:2000]}")


def text(css):
    return find(css).text


def click(css):
    """Clicks; a button or link loads a page, so this returns only once the old page is gone."""
    e = find(css)
    navigates = e.tag_name in ("button", "a")
    old = d.find_element(By.TAG_NAME, "html")
    e.click()
    if navigates:
        WebDriverWait(d, 60).until(lambda _: gone(old))


def gone(element):
    """Whether `element` left the document (chromedriver says so in two ways mid-navigation)."""
    try:
        element.is_enabled()
        return False
    except (StaleElementReferenceException, WebDriverException):
        return True


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


def wait_job(final="Succeeded"):
    """On a job's page: waits until the page (polling, then reloading) shows the job ended."""
    end = time.time() + WAIT
    while True:
        # Read in the page (the page reloads itself when the job ends: no stale element).
        # A page still carrying the progress bar is the running job's page: its script reloads it
        # once the job ends, so only the page rendered after the end counts.
        st = d.execute_script(
            "var e = document.getElementById('job-status');"
            "if (!e || document.querySelector('progress[data-job]')) { return e ? 'Running' : ''; }"
            "return e.textContent.trim()")
        if st == final:
            find("#job-status")
            return
        assert st in ("Queued", "Running", ""), f"the job ended {st}: {d.page_source[-3000:]}"
        assert time.time() < end, "the job did not end"
        time.sleep(0.3)


def tab_to(element_id, limit=60):
    """Presses Tab from the top of the page until `element_id` has the focus."""
    d.execute_script("document.activeElement && document.activeElement.blur();")
    for _ in range(limit):
        ActionChains(d).send_keys(Keys.TAB).perform()
        if d.switch_to.active_element.get_attribute("id") == element_id:
            return d.switch_to.active_element
    raise AssertionError(f"{element_id} is not reachable with the keyboard")


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
    # Times are shown in the browser's zone (Asia/Kolkata here), the UTC value on hover.
    t = find("#backups time[datetime]")
    iso = t.get_attribute("datetime")
    assert t.get_attribute("title") == iso.replace("T", " ").replace("Z", " UTC"), t.get_attribute("title")
    assert t.text and t.text != t.get_attribute("title") and "UTC" not in t.text, (t.text, iso)
    shot("backups")
    # Backup now with the keyboard only: Tab to the button, Enter.
    tab_to("backup-now").send_keys(Keys.ENTER)
    wait.until(lambda _: path().startswith("/backups/") and path() != "/backups/now")
    new_id = path().split("/")[-1]
    assert new_id != FIRST
    wait_job()
    assert "sample" in text("#components")
    shot("backup")

    # Validate: a wrong password is refused beside its field (and never shown back); with the
    # right one the job runs, and its report downloads.
    go("/restore")
    assert Select(find("#backup")).first_selected_option.get_attribute("value") == new_id
    shot("restore")
    find("#validate-pfx").send_keys(PFX)
    fill("#validate-password", "not-the-password-x9")
    click("#start-validate")
    err = text("#validate-pfx_password-error")
    assert "password" in err, err
    assert "not-the-password-x9" not in d.page_source
    shot("validate-wrong-password")
    find("#validate-pfx").send_keys(PFX)
    fill("#validate-password", PFX_PASSWORD)
    click("#start-validate")
    wait.until(lambda _: path().startswith("/jobs/"))
    validation = path().split("/")[-1]
    wait_job()
    shot("validation")
    find("#report-html").click()  # a download: the page stays
    report = os.path.join(DOWNLOADS, f"ibs-validation-{validation}.html")
    end = time.time() + 60
    while not os.path.exists(report):
        assert time.time() < end, f"the report did not download: {os.listdir(DOWNLOADS)}"
        time.sleep(0.3)
    time.sleep(0.5)
    with open(report, encoding="utf-8") as f:
        html = f.read()
    assert "ibs backup validation" in html, html[:300]
    assert api(f"/api/v1/backups/{new_id}")["backup_id"] in html, "the report names the backup"

    # Restore one component of that backup with the .pfx, and check the restored file.
    go(f"/restore?backup={new_id}")
    Select(find("#restore-component")).select_by_value("sample")
    fill("#restore-target", RESTORE_TARGET)
    find("#restore-pfx").send_keys(PFX)
    fill("#restore-password", PFX_PASSWORD)
    click("#start-restore")
    wait.until(lambda _: path().startswith("/jobs/"))
    wait_job()
    shot("restore-done")
    found = [os.path.join(r, f) for r, _, fs in os.walk(RESTORE_TARGET) for f in fs if f == "app.conf"]
    assert len(found) == 1, found
    with open(found[0], "rb") as f:
        assert f.read() == b"setting = 1\n"
    assert PFX_PASSWORD not in d.page_source
    # The .pfx password typed into the console is nowhere in the controller's data directory
    # (the state database and its WAL, the repository, the restores' metadata), apart from the
    # bootstrap's own password file under certs/.
    secret = PFX_PASSWORD.encode()
    for root, dirs, files in os.walk(DATA):
        dirs[:] = [x for x in dirs if os.path.join(root, x) != os.path.join(DATA, "certs")]
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret not in f.read(), f"the .pfx password is in {os.path.join(root, name)}"

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
    # The scheduler back on, so the tick raises no new alert of that kind.
    api_put("/api/v1/location", {"scheduler_enabled": True})
    go("/alerts?state=all")
    assert "(closed)" in text(f"#{alert_id}"), text(f"#{alert_id}")
    shot("alerts-closed")
    click(f"#{alert_id} .reopen-alert")
    wait.until(lambda _: path() == "/alerts")
    assert "(open)" in text(f"#{alert_id}"), text(f"#{alert_id}")

    # Maintenance: begin, see it, end.
    go("/maintenance")
    shot("maintenance")
    Select(find("#operation")).select_by_value("update")
    click("#begin-maintenance")
    wait.until(lambda _: path() == "/maintenance")
    assert text("#maintenance-status") == "active"
    assert api("/api/v1/maintenance")["operation"] == "update"
    shot("maintenance-active")
    go("/")
    assert "maintenance" in text("#next-backup"), text("#next-backup")
    go("/maintenance")
    click("#outcome-succeeded")
    click("#end-maintenance")
    wait.until(lambda _: path() == "/maintenance")
    assert "No maintenance operation" in text("#maintenance-status")
    assert api("/api/v1/maintenance") is None

    # Verification: the view, and a verification started from it.
    go("/verification")
    find("#coverage")
    shot("verification")
    # A scheduled job may hold the gate for a moment (409 naming it): try again, as a person would.
    for _ in range(30):
        click("#verify-now")
        if path().startswith("/jobs/"):
            break
        assert "409" in text("h1"), text("main")
        # The refused request's 409 is in the browser's log: expected here, so taken out of it
        # (any other severe entry still fails).
        other = [e for e in d.get_log("browser")
                 if e["level"] == "SEVERE" and "/verification" not in e["message"]]
        assert not other, f"console errors while retrying: {other}"
        time.sleep(1)
        go("/verification")
    assert path().startswith("/jobs/"), text("main")
    wait_job()
    go("/verification")
    assert "No damaged packs" in text("#damaged")
    assert "None" in text("#corrupted")
    assert "of 0" not in text("#coverage"), text("#coverage")

    # Components: read-only, no hook or command shown.
    go("/components")
    assert "sample" in text("#components")
    assert len(d.find_elements(By.CSS_SELECTOR, "main form, main input, main button")) == 0
    assert "set (hidden)" in text("#components"), text("#components")
    assert "CONSOLE-PRE-HOOK-MARKER" not in d.page_source, "a hook command is shown"
    shot("components")

    # The location form: a .pfx as the certificate is refused as a private key, beside the
    # field; a relative path is refused beside the path; a missing folder fails the accessibility
    # test; a new folder passes it with the .cer, and the result is shown.
    go("/settings")
    find("#certificate").send_keys(PFX)
    click("#save-location")
    err = text("#certificate-error")
    assert "private key" in err, err
    shot("settings-pfx-refused")
    fill("#path", "relative/folder")
    click("#save-location")
    assert "path" in text("#path-error"), text("#path-error")
    # A folder that does not exist fails the accessibility test: its result and remediation are
    # shown beside the path, nothing is saved.
    fill("#path", LOCATION2)
    click("#save-location")
    assert "does not exist" in text("#path-error"), text("#path-error")
    assert "Accessibility test failed" in text("#accessibility-failed")
    assert api("/api/v1/location")["path"] != LOCATION2
    shot("settings-accessibility-failed")
    os.makedirs(LOCATION2)
    fill("#path", LOCATION2)
    find("#certificate").send_keys(CER)
    click("#save-location")
    assert "Accessibility test passed" in text("#location-saved"), text("#location-saved")
    assert api("/api/v1/location")["path"] == LOCATION2
    shot("settings-location-saved")

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
    for page in ("/", "/backups", "/alerts?state=all", "/settings", "/maintenance",
                 "/verification", "/components", "/restore"):
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

    # A narrow (phone) screen: each main page (as the reader).
    d.set_window_size(390, 844)
    for name, page in (("overview", "/"), ("backups", "/backups"), ("alerts", "/alerts?state=all"),
                       ("maintenance", "/maintenance"), ("verification", "/verification"),
                       ("components", "/components"), ("settings", "/settings")):
        go(page)
        find("main")
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{page} scrolls sideways at phone width: {width}px"
        shot(name + "-phone")
    print("console flows: all passed")
finally:
    d.quit()
