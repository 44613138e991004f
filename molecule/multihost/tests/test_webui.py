"""The chat page (roles/llmrig_webui) on inference host A, in a real browser: Debian's headless Chromium driven
through its chromedriver (Selenium). Log in as the administrator from the vault, pick mh-a, send a message and
watch the answer stream in (its text read several times while it grows), then pick mh-both (a swap on A's
router, which holds one model) and watch its answer stream in too. Screenshots go to .cache/webui-screenshots/.
The endpoint's key never reaches the browser (the page, its API answers and its storage are searched for it),
and the service made no connection to anything but A's own router."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator

import pytest
import testinfra
from llmrig_testlib import API_KEY, REPO, wait_for
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

WEBUI = os.environ.get("LLMRIG_MH_WEBUI_URL", "http://127.0.0.1:28090")
ROUTER_A = os.environ.get("LLMRIG_MH_A_URL", "http://127.0.0.1:28080")
ADMIN = ("admin@llmrig.local", "llmrig-webui-test-password")  # group_vars/llmrig_test.yml: not a secret
SHOTS = REPO / ".cache/webui-screenshots"


def loaded_on_a() -> list[str]:
    ask = urllib.request.Request(f"{ROUTER_A}/models", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(ask, timeout=30) as answer:
        return [m["id"] for m in json.load(answer)["data"] if m["status"]["value"] == "loaded"]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(120)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the last element that matches, read in the page in one step: the page re-renders an answer
    while it streams, and an element found first and read after may be gone by then (stale)."""
    script = (
        "const found = document.querySelectorAll(arguments[0]);"
        "return found.length ? found[found.length - 1].innerText : ''"
    )
    return str(driver.execute_script(script, css)).strip()


def answer_text(driver: WebDriver) -> str:
    return text_of(driver, ".chat-assistant")


def ask_in_the_page(driver: WebDriver, model: str, message: str, shot: str) -> list[str]:
    """Pick the model, send the message and read the answer while it streams; stop it once it has grown
    (the page sends no max_tokens). Returns the answer's text at each reading that differed from the last."""
    driver.find_element(By.ID, "model-selector-model-button").click()
    option = f"button[data-value='{model}']"
    assert wait_for(lambda: driver.execute_script("return !!document.querySelector(arguments[0])", option), 60, 0.25), (
        f"no {model} in the model list"
    )
    driver.execute_script("document.querySelector(arguments[0]).click()", option)
    assert wait_for(lambda: model in text_of(driver, "#model-selector-model-button"), 60, 0.25), f"{model} not selected"
    box = driver.find_element(By.ID, "chat-input")
    box.click()
    box.send_keys(message)
    count = "return document.querySelectorAll('.chat-assistant').length"
    before = driver.execute_script(count)
    box.send_keys(Keys.ENTER)
    assert wait_for(lambda: driver.execute_script(count) > before, 120, 0.25), "no answer block"
    # read it every 0.1 s until it has changed four times, or has not changed for 15 s (it ended)
    readings: list[str] = []
    changed = time.monotonic()
    deadline = changed + 180
    while time.monotonic() < deadline and len(readings) < 4:
        text = answer_text(driver)
        if text and (not readings or text != readings[-1]):
            readings.append(text)
            changed = time.monotonic()
        if readings and time.monotonic() - changed > 15:
            break
        time.sleep(0.1)
    time.sleep(2)  # a little more of the answer in the picture
    driver.save_screenshot(str(SHOTS / shot))
    # stop it if it still streams (the button goes when the answer ends, perhaps just now)
    driver.execute_script("document.querySelector(\"button[aria-label='Stop']\")?.click()")
    return readings


def test_a_person_logs_in_chats_with_one_model_then_another_and_sees_the_answers_stream(browser):
    started = time.monotonic()
    browser.get(f"{WEBUI}/auth")
    assert wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input[name=email]"), 120, 0.25), "no sign-in form"
    browser.save_screenshot(str(SHOTS / "1-sign-in.png"))
    browser.find_element(By.CSS_SELECTOR, "input[name=email]").send_keys(ADMIN[0])
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(ADMIN[1])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert wait_for(lambda: browser.find_elements(By.ID, "chat-input"), 120, 0.25), "no chat page"
    # the release notes greet a new account once
    for button in browser.find_elements(By.XPATH, '//button[contains(., "Okay, Let\'s Go!")]'):
        button.click()

    browser.find_element(By.ID, "model-selector-model-button").click()
    listed = wait_for(
        lambda: browser.execute_script(
            "return [...document.querySelectorAll('button[role=option]')].map(b => b.dataset.value)"
        ),
        60,
        0.25,
    )
    assert listed, "no model list"
    browser.save_screenshot(str(SHOTS / "2-model-list.png"))
    browser.find_element(By.ID, "model-selector-model-button").click()  # close it again
    # A's own models (its router lists the entries placed on it), nothing of B's
    assert {"mh-both", "mh-a"} <= set(listed) and "mh-b" not in listed, listed

    first = ask_in_the_page(browser, "mh-a", "Write a long story about a lighthouse keeper.", "3-answer-mh-a.png")
    assert loaded_on_a() == ["mh-a"]
    browser.get(f"{WEBUI}/")  # a new chat
    assert wait_for(lambda: browser.find_elements(By.ID, "chat-input"), 120, 0.25), "no new chat"
    second = ask_in_the_page(
        browser, "mh-both", "Write a long story about a lighthouse keeper.", "4-answer-mh-both.png"
    )
    assert loaded_on_a() == ["mh-both"]  # the page's switch was a swap on the router
    print(
        f"\nchat page: signed in, mh-a answered ({len(first)} readings while it streamed, {len(first[-1])} chars),"
        f" then mh-both after a swap ({len(second)} readings, {len(second[-1])} chars), in"
        f" {time.monotonic() - started:.1f} s; screenshots in {SHOTS}"
    )
    # several readings of a growing answer: it streamed in, it did not arrive at once
    assert len(first) >= 3 and len(second) >= 3
    # the page's requests end (stopped, or at the presets' n-predict): A is left idle for the later tests.
    # The router's own drain waits for that (no request processing or waiting in a loaded model).
    drained = testinfra.get_host("podman://llmrig-mh-a").run(
        "/usr/local/sbin/llmrig-gateway-drain http://127.0.0.1:8080 /etc/llmrig/api-key 120"
    )
    assert drained.rc == 0 and "still in flight" not in drained.stdout, drained.stdout + drained.stderr


def test_the_browser_never_receives_the_endpoints_key(browser):
    """Everything the signed-in page can read: its HTML, what its own API hands a user (config, models, the
    chats), and its storage."""
    seen = [browser.page_source]
    for path in ("/api/config", "/api/models", "/api/v1/chats/", "/api/v1/auths/"):
        seen.append(
            browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0], {headers: {Authorization: 'Bearer ' + localStorage.token}})"
                ".then(r => r.text()).then(done, e => done(String(e)));",
                path,
            )
        )
    seen.append(browser.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"))
    assert "mh-a" in seen[2], seen[2][:300]  # the page's token worked: these are real answers, not 401s
    assert all(API_KEY not in text for text in seen)


def test_the_chat_page_reaches_nothing_but_its_endpoint():
    """Open WebUI's connections from inside host A: every one it opened goes to A's router (loopback)."""
    host = testinfra.get_host("podman://llmrig-mh-a")
    pid = host.run("systemctl show -p MainPID --value llmrig-webui").stdout.strip()
    sockets = host.run(f"ss -Htnp state established | grep 'pid={pid},' || true").stdout.splitlines()
    # local and remote address:port of each connection; those to its own port are the browser's
    outgoing = [line.split()[3] for line in sockets if not line.split()[2].endswith(":8090")]
    assert all(peer.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for peer in outgoing), outgoing
    journal = host.run("journalctl -u llmrig-webui --no-pager").stdout
    for outside in ("huggingface.co", "api.github.com", "raw.githubusercontent.com", "scarf.sh"):
        assert outside not in journal, outside


def test_the_screenshots_were_saved():
    shots = {path.name: path.stat().st_size for path in SHOTS.glob("*.png")}
    assert {"1-sign-in.png", "3-answer-mh-a.png", "4-answer-mh-both.png"} <= set(shots)
    assert all(size > 10_000 for size in shots.values()), shots
