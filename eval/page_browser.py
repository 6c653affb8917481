"""Drive the service's search page in headless Chromium (Debian chromium + chromium-driver).

Used by the page test and by `python eval/page_browser.py INDEX_DIR --out PNG`, which takes
the README's screenshot the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def open_browser(width: int = 1280, height: int = 900):
    """Headless Chromium through chromedriver (no driver download: both come from Debian)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError("Debian's chromium and chromium-driver are needed: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def search_and_explain(url: str, query: str, mode: str, screenshot: Path, timeout: float = 60.0) -> dict:
    """Type a query, choose a mode, wait for results, open the first explain view, screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = open_browser()
    try:
        browser.get(url + "/")
        box = browser.find_element(By.ID, "query")
        box.send_keys(query)
        Select(browser.find_element(By.ID, "mode")).select_by_value(mode)
        browser.find_element(By.ID, "search-button").click()
        wait = WebDriverWait(browser, timeout)
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#results .result")))
        results = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        marks = browser.find_elements(By.CSS_SELECTOR, "#results .result mark")
        results[0].find_element(By.CLASS_NAME, "explain-button").click()
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#explain-table .explain-row")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#explain-table .explain-row")
        browser.save_screenshot(str(screenshot))
        return {"results": len(results), "first_id": results[0].get_attribute("data-id"),
                "marks": [m.text for m in marks], "explain_terms": [r.find_element(By.TAG_NAME, "td").text for r in rows],
                "status": browser.find_element(By.ID, "status").text}
    finally:
        browser.quit()


def main() -> int:
    from lsr.eval.server_process import ServerProcess

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--query", default="stem cell differentiation")
    parser.add_argument("--mode", default="hybrid", choices=["sparse", "dense", "hybrid"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with ServerProcess(args.index) as server:
        seen = search_and_explain(server.url, args.query, args.mode, args.out)
    print(f"{seen['results']} results, first {seen['first_id']}; {len(seen['explain_terms'])} explained terms; "
          f"screenshot {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
