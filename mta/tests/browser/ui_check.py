"""Drives the /ui dashboard of a running MTA in headless Chromium (Selenium + chromedriver):
the numbers on the cards and in the queue table must match the JSON API, the chart must be drawn,
and clicking "pause" on a queue must pause it (seen in the page and in the API).

usage: ui_check.py BASE_URL QUEUE SCREENSHOT.png
"""
import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait


def api(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def main():
    base, queue, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(base + "/ui")
        # The page re-renders its tables every 2 s: an element found just before may go stale.
        wait = WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")
        status = api(base, "/api/v1/status")["status"]
        shown = {k: driver.find_element(By.ID, k).text for k in
                 ("received", "delivered", "bounced", "queued", "backoff")}
        expected = {
            "received": str(status["totals"]["received"]),
            "delivered": str(status["totals"]["delivered"]),
            "bounced": str(status["totals"]["bounced"]),
            "queued": str(status["queue"]["smtp"]["rcp"]),
            "backoff": str(status["queue"]["smtp"]["backoff"]),
        }
        assert shown == expected, f"cards {shown} != API {expected}"
        listing = api(base, "/api/v1/queues")
        queues = {q["name"]: q for q in listing["queues"]}
        queues_time = listing["timeMs"]
        # Read the table in one script call (it is re-rendered every 2 s).
        table = driver.execute_script(
            "return [...document.querySelectorAll('#queues tbody tr')].map(r => "
            "({name: r.dataset.queue, rcpt: r.querySelector('td.rcpt').textContent}))")
        shown_rcpt = {r["name"]: r["rcpt"] for r in table}
        assert shown_rcpt[queue] == str(queues[queue]["rcpt"]), \
            f"queue table {shown_rcpt} differs from the API"
        # Why each queue waits, and when it tries next: every recipient got `451 4.3.0 try later`
        # and waits retry-after 1h.
        api_q = queues[queue]
        assert api_q["waitingKind"] == "retry", f"waiting: {api_q}"
        assert "retry after 451 4.3.0 try later" in api_q["waiting"], f"waiting: {api_q}"
        assert api_q["nextAttemptMs"] - queues_time > 50 * 60 * 1000, f"next attempt: {api_q}"
        # The table is redrawn every 2 s: wait for a drawing made after the API's answer.
        cells_js = (
            "const r = document.querySelector('#queues tbody tr[data-queue=\"" + queue + "\"]');"
            "return r ? [r.querySelector('td.waiting').textContent,"
            " r.querySelector('td.next').textContent] : ['', '']")
        try:
            wait.until(lambda d: d.execute_script(cells_js)[0] == api_q["waiting"])
        except Exception:
            raise AssertionError(f"waiting cell {driver.execute_script(cells_js)!r} != {api_q['waiting']!r}")
        cells = driver.execute_script(cells_js)
        assert cells[1].startswith("in ") and ("h" in cells[1] or "m" in cells[1]), f"next cell {cells[1]!r}"
        sizes = [int(r["rcpt"]) for r in table]
        assert sizes == sorted(sizes, reverse=True), f"not sorted by size: {sizes}"
        assert len(table) == len(queues), f"{len(table)} rows for {len(queues)} queues"
        path = driver.find_element(By.CSS_SELECTOR, '#chart path[data-series="in"]')
        assert path.get_attribute("d").count("L") == 59, "the chart has 60 points"
        height = driver.execute_script(
            "return document.querySelector('#chart path[data-series=\"in\"]').getBBox().height")
        assert height > 0, "the chart line is not drawn (not an SVG element?)"
        assert not queues[queue]["paused"]
        for attempt in range(5):
            try:
                driver.find_element(By.CSS_SELECTOR, f'tr[data-queue="{queue}"] button.pause').click()
                break
            except StaleElementReferenceException:
                time.sleep(0.1)
        wait.until(lambda d: "paused" in d.find_element(
            By.CSS_SELECTOR, f'tr[data-queue="{queue}"]').get_attribute("class"))
        after = {q["name"]: q for q in api(base, "/api/v1/queues")["queues"]}
        assert after[queue]["paused"] is True, "the API does not show the queue paused"
        wait.until(lambda d: d.find_element(
            By.CSS_SELECTOR, f'tr[data-queue="{queue}"] td.waiting').text == "paused by an operator")
        others = [n for n, q in after.items() if n != queue and q["paused"]]
        assert not others, f"other queues paused too: {others}"
        # Sorting by name is a click on the header.
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="name"]').click()
        names = driver.execute_script(
            "return [...document.querySelectorAll('#queues tbody tr td.name')].map(t => t.textContent)")
        assert names == sorted(names), f"not sorted by name: {names}"
        driver.save_screenshot(shot)
        print(json.dumps({"ok": True, "cards": shown, "paused": queue}))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
