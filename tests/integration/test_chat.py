"""The chat example end to end, as a person uses it: two pages in headless Chromium
(Debian's chromium and chromium-driver, driven by python3-selenium); a message typed in
one appears in both."""
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from conftest import BUILD


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@pytest.fixture
def pages():
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        drivers = [browser(a), browser(b)]
        yield drivers
        for d in drivers:
            d.quit()


def log_of(driver):
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#log li")]


def test_a_message_typed_in_one_page_appears_in_the_other(start_server, pages):
    s = start_server("-w", "1", app=BUILD / "libchat.so")
    alice, bob = pages
    for page in pages:
        page.get(s.url + "/")
        WebDriverWait(page, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "connected"))
    alice.find_element(By.ID, "text").send_keys("hello from alice")
    alice.find_element(By.ID, "send").click()
    for page in pages:
        WebDriverWait(page, 10).until(lambda d: log_of(d) == ["hello from alice"])
    bob.find_element(By.ID, "text").send_keys("hi alice, bob here")
    bob.find_element(By.ID, "send").click()
    for page in pages:
        WebDriverWait(page, 10).until(lambda d: log_of(d) == ["hello from alice", "hi alice, bob here"])
    assert alice.title == "tricorn chat"
