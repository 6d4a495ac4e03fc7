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
  contract the page's tail and search panels against a stand-in server of the GET /logs/tail and
           GET /logs contract (this script serves it, with the page's files from --assets; --url
           is not used): SSE `log` events shown, heartbeats skipped, `cut` retried; pages by cursor.

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


def texts(driver, css):
    """The text of every element matching `css`, read at once (the page replaces them as it goes)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);", css)


def tail_lines(driver):
    return texts(driver, "#tail li")


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


def contract_server(assets):
    """A stand-in for the routes other tasks build, to their contract; returns its base URL."""
    import http.server
    import threading

    class Contract(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        tails = 0

        def log_message(self, *args):
            pass

        def answer(self, body, content_type, status=200):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path == "/":
                page = open(os.path.join(assets, "index.html")).read()
                for key, value in (("AUDIENCE", "public"), ("AUTH", "open"), ("SEARCH", "on"), ("TAIL", "on")):
                    page = page.replace("{{%s}}" % key, value)
                return self.answer(page.encode(), "text/html; charset=utf-8")
            if self.path.startswith("/assets/"):
                name = os.path.basename(self.path)
                kinds = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
                with open(os.path.join(assets, name), "rb") as f:
                    return self.answer(f.read(), kinds[name.rsplit(".", 1)[-1]])
            if self.path == "/favicon.ico":
                return self.answer(b"", "image/svg+xml")
            if self.path.startswith("/logs/tail?"):
                Contract.tails += 1
                if "level=error%2B" not in self.path:
                    return self.answer(b'{"error":"bad_level"}', "application/json", 400)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b": heartbeat\n\n")
                for i in range(3):
                    event = {"ts": f"2026-01-01T00:00:0{i}Z", "level": "error", "service": "contract",
                             "message": f"contract line {i} of tail {Contract.tails}", "user_id": None,
                             "attrs": {}, "topic": "logs", "partition": 0, "offset": i}
                    self.wfile.write(f"event: log\ndata: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                if Contract.tails == 1:
                    self.wfile.write(b'event: cut\ndata: {"error":"slow_client","message":"too slow"}\n\n')
                    return
                time.sleep(30)
                return
            if self.path.startswith("/logs?"):
                cursor = "page2" if "cursor=page1" not in self.path else None
                event = {"ts": "2026-01-01T00:00:00Z", "level": "warn", "service": "contract",
                         "message": f"found {self.path}", "user_id": None, "attrs": {},
                         "topic": "logs", "partition": 0, "offset": 1}
                body = {"events": [event], "next_cursor": "page1" if cursor else None,
                        "truncated": False, "source": "postgres"}
                return self.answer(json.dumps(body).encode(), "application/json")
            self.answer(b'{"error":"not_found"}', "application/json", 404)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Contract)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def scenario_contract(driver, args):
    url = contract_server(args.assets)
    driver.get(url + "/")
    # The first tail is cut after three lines; the page follows again and gets three more.
    lines = wait("six tail lines", 15, lambda: (lambda ls: ls if len(ls) >= 6 else None)(tail_lines(driver)))
    check("SSE log events shown, newest first", lines[0].endswith("contract line 2 of tail 2"), lines[0])
    check("the cut tail is followed again", any("of tail 1" in x for x in lines), json.dumps(lines))
    check("heartbeats are not lines", len(lines) == 6, json.dumps(lines))
    form = driver.find_element(By.ID, "search-q")
    form.send_keys("timeout -debug" + Keys.ENTER)
    first = wait("search results", 5, lambda: texts(driver, "#search-results li"))
    check("search sends the words", "q=timeout+-debug" in first[0], first[0])
    driver.find_element(By.ID, "search-older").click()
    older = wait("the older page", 5, lambda: (lambda r: r if r and "cursor=page1" in r[0] else None)(
        texts(driver, "#search-results li")))
    check("older pages by the answer's next_cursor", True, older[0])
    check("no older page after the last", not driver.find_element(By.ID, "search-older").is_enabled())
    driver.find_element(By.ID, "search-newer").click()
    newest = wait("the newest page again", 5, lambda: (lambda r: r if r and "cursor" not in r[0] else None)(
        texts(driver, "#search-results li")))
    check("newer goes back", True, newest[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="")
    parser.add_argument("--assets", default=os.path.join(os.path.dirname(__file__), "../../assets/dashboard"))
    parser.add_argument("--scenario", required=True, choices=["live", "restart", "tail", "jwt", "contract"])
    parser.add_argument("--service", default="", help="a service no other test uses")
    parser.add_argument("--marker", default=f"dash{os.getpid()}", help="a word in every posted message")
    parser.add_argument("--token")
    parser.add_argument("--screenshot")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the screenshot")
    args = parser.parse_args()
    driver = browser()
    try:
        scenarios = {"live": scenario_live, "restart": scenario_restart, "tail": scenario_tail,
                     "jwt": scenario_jwt, "contract": scenario_contract}
        scenarios[args.scenario](driver, args)
        print("PASS", flush=True)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"FAIL {type(e).__name__ if not isinstance(e, Failed) else ''} {e}".replace("  ", " "), flush=True)
        try:
            print("console:", json.dumps(driver.get_log("browser"))[:2000], flush=True)
        except Exception:  # noqa: BLE001 - the report is best effort
            pass
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
