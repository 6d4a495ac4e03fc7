#!/usr/bin/env python3
"""The live dashboard in a real, headless Chromium (Debian's, driven by Selenium).

Run by tests/integration/dashboard.rs against a `log-analyzer run` it started; it can be run by hand
too (scripts/tools.sh installs what it needs):

    ~/.cache/log-analyzer/browser-venv/bin/python tests/browser/dashboard.py \
        --url http://127.0.0.1:8080 --scenario live --service checkout-1

Scenarios:
  live     the page loads with no console error; 7 errors POSTed for a new service raise its 60 s count
           on the page by 7 within 3 s (read from data-metric/data-service); --screenshot saves it.
  restart  as `live`, then prints RESTART and waits for a line on stdin once the server is back on
           the same port: the page must have shown "reconnecting", and must then update again.
  tail     7 error lines POSTed show up in the live tail.
  jwt      with JWT on (--token is a good one): no data without a token (the page asks for one, a
           socket without a token is closed with 1008 and gets no frame), and data once it is given.

Every check prints `CHECK <name> ok …`; the first that fails prints `FAIL <name>: …` and exits 1.
"""

import argparse
import json
import os
import shutil
import sys
import time
import urllib.request

os.environ.setdefault("SE_AVOID_STATS", "true")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


class Failed(Exception):
    pass


def check(name, ok, detail=""):
    if not ok:
        raise Failed(f"{name}: {detail}")
    print(f"CHECK {name} ok {detail}".rstrip(), flush=True)


def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        print("FAIL setup: chromium or chromedriver is missing: run scripts/tools.sh", flush=True)
        sys.exit(2)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100",
                "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def post_errors(url, service, count, marker, token=None):
    now = time.time()
    lines = "".join(
        json.dumps({
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": "error",
            "service": service,
            "message": f"{marker} failure {i} of {count}",
        }) + "\n"
        for i in range(count)
    )
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/ingest", data=lines.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    check("ingest accepted", answer.get("accepted") == count, json.dumps(answer)[:200])


def service_errors(driver, service):
    """The service's 60 s error count as the page shows it, or None while it has no row."""
    cells = driver.find_elements(
        By.CSS_SELECTOR, f'td[data-metric="errors"][data-service="{service}"][data-window="60s"]')
    if not cells:
        return None
    value = cells[0].get_attribute("data-value")
    return int(value) if value not in (None, "") else None


def wait(what, timeout, probe, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout} s")
        time.sleep(interval)


def connection(driver):
    el = driver.find_element(By.ID, "connection")
    return el.get_attribute("data-state"), el.text, int(el.get_attribute("data-reconnects") or 0)


def load(driver, url):
    driver.get(url + "/")
    wait("the first frame", 15, lambda: connection(driver)[0] == "live")
    check("page live", True, connection(driver)[1])


def severe_entries(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def rises_by_seven(driver, args, service, token=None):
    before = service_errors(driver, service) or 0
    posted = time.monotonic()
    post_errors(args.url, service, 7, args.marker, token)
    wait(f"{service}'s 60 s errors to rise by 7 (from {before})", 3,
         lambda: (service_errors(driver, service) or 0) >= before + 7)
    took = time.monotonic() - posted
    after = service_errors(driver, service)
    check("60s errors rise by 7 within 3 s", after == before + 7, f"{before} -> {after} in {took:.2f} s")
    return after


def scenario_live(driver, args):
    load(driver, args.url)
    severe = severe_entries(driver)
    check("no SEVERE console entry on load", not severe, json.dumps(severe)[:500])
    for metric in ("events_per_second", "total", "errors", "error_rate", "watermark", "lag_events"):
        els = driver.find_elements(By.CSS_SELECTOR, f'[data-metric="{metric}"]')
        check(f"data-metric {metric} present", bool(els))
    rises_by_seven(driver, args, args.service)
    if args.screenshot:
        # The sparklines fill a second at a time: let a few more frames in first.
        time.sleep(args.settle)
        driver.save_screenshot(args.screenshot)
        check("screenshot", os.path.getsize(args.screenshot) > 10_000, args.screenshot)
    severe = severe_entries(driver)
    check("no SEVERE console entry after the updates", not severe, json.dumps(severe)[:500])


def scenario_restart(driver, args):
    load(driver, args.url)
    before = rises_by_seven(driver, args, args.service)
    _, _, reconnects = connection(driver)
    print("RESTART", flush=True)
    wait("the page to show reconnecting", 30,
         lambda: connection(driver)[0] == "reconnecting" or connection(driver)[2] > reconnects, interval=0.02)
    check("reconnecting shown", "reconnecting" in connection(driver)[1] or connection(driver)[2] > reconnects,
          connection(driver)[1])
    line = sys.stdin.readline().strip()
    check("server restarted", line == "restarted", line)
    wait("the page to be live again", 30, lambda: connection(driver)[0] == "live")
    check("live again", True)
    # The restarted server rebuilt its windows: the count is back, and new events move it again.
    wait(f"{args.service}'s count after the restart", 10, lambda: service_errors(driver, args.service) == before)
    post_errors(args.url, args.service, 3, args.marker)
    wait("the page to update after the restart", 5, lambda: service_errors(driver, args.service) == before + 3)
    check("updates after the restart", True, f"{before} -> {before + 3}")


def tail_lines(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#tail li")]


def scenario_tail(driver, args):
    load(driver, args.url)
    wait("the tail to follow", 10,
         lambda: "following" in driver.find_element(By.ID, "tail-status").text)
    post_errors(args.url, args.service, 7, args.marker)
    lines = wait("7 tail lines", 10,
                 lambda: (lambda ls: ls if len([x for x in ls if args.marker in x]) >= 7 else None)(tail_lines(driver)))
    mine = [x for x in lines if args.marker in x]
    check("the tail shows those lines", len(mine) == 7 and all(args.service in x for x in mine), mine[0])


SOCKET_PROBE = """
const [token, done] = [arguments[0], arguments[arguments.length - 1]];
const ws = new WebSocket(`ws://${location.host}/ws`);
const seen = {messages: 0, code: null, reason: null};
ws.onopen = () => { if (token !== null) ws.send(JSON.stringify({token})); };
ws.onmessage = () => { seen.messages += 1; if (token !== null && seen.messages >= 1) { ws.close(); } };
ws.onclose = (e) => { seen.code = e.code; seen.reason = e.reason; done(seen); };
"""


def scenario_jwt(driver, args):
    driver.set_script_timeout(20)
    driver.get(args.url + "/")
    form = wait("the token form", 10, lambda: (lambda f: f if f.is_displayed() else None)(
        driver.find_element(By.ID, "token-form")))
    check("the page asks for a token", form.is_displayed())
    post_errors(args.url, args.service, 7, args.marker, args.token)
    time.sleep(2)
    check("no data without a token", service_errors(driver, args.service) is None
          and driver.find_element(By.CSS_SELECTOR, '.overview [data-metric="errors"]').get_attribute("data-value") in (None, ""))
    silent = driver.execute_async_script(SOCKET_PROBE, None)
    check("a socket without a token is closed with 1008 and no frame",
          silent["code"] == 1008 and silent["messages"] == 0, json.dumps(silent))
    forged = driver.execute_async_script(SOCKET_PROBE, args.token[:-4] + "AAAA")
    check("a socket with a bad token is closed with 1008 and no frame",
          forged["code"] == 1008 and forged["messages"] == 0, json.dumps(forged))
    good = driver.execute_async_script(SOCKET_PROBE, args.token)
    check("a socket with the token gets frames", good["messages"] >= 1, json.dumps(good))
    # By keyboard: the field has the focus, the token is typed and Enter submits it.
    field = driver.switch_to.active_element
    check("the token field has the focus", field.get_attribute("id") == "token")
    field.send_keys(args.token + Keys.ENTER)
    wait("the page to go live with the token", 15, lambda: connection(driver)[0] == "live")
    wait(f"{args.service}'s errors with the token", 5, lambda: service_errors(driver, args.service) == 7)
    check("data with the token", True, "7 errors shown")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", required=True, choices=["live", "restart", "tail", "jwt"])
    parser.add_argument("--service", required=True, help="a service no other test uses")
    parser.add_argument("--marker", default=f"dash{os.getpid()}", help="a word in every posted message")
    parser.add_argument("--token")
    parser.add_argument("--screenshot")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the screenshot")
    args = parser.parse_args()
    driver = browser()
    try:
        {"live": scenario_live, "restart": scenario_restart, "tail": scenario_tail, "jwt": scenario_jwt}[
            args.scenario](driver, args)
        print("PASS", flush=True)
    except Failed as e:
        print(f"FAIL {e}", flush=True)
        try:
            print("console:", json.dumps(driver.get_log("browser"))[:2000], flush=True)
        except Exception:  # noqa: BLE001 - the report is best effort
            pass
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
