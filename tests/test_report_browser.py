"""index.html opened in a real browser (Debian's headless Chromium, driven by Selenium)."""
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, clean_env, run_train

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver (make test-slow installs them)"),
]


def test_report_page_loads_every_figure_and_the_table(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    sweep = tmp_path / "sweep"
    run_train("-m", "norm=bn,gn", "data.batch_size=8,32", "data=synthetic", "data.train_size=256",
              "trainer.max_epochs=2", "logger=csv", f"hydra.sweep.dir={sweep}")
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep), "wandb.mode=disabled"], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((sweep / "report" / "index.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert {img.get_attribute("id") for img in images} == {"batch_sensitivity", "convergence", "performance_profile", "batch_noise",
                                                                 "input_drift"}  # the Why figures too
        for img in images:
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        rows = driver.find_elements(By.CSS_SELECTOR, "#results tr")
        assert [r.find_element(By.TAG_NAME, "th").text for r in rows[1:]] == ["bn", "gn"]
        assert len(rows[1].find_elements(By.TAG_NAME, "td")) == 2
        assert "★" in driver.find_element(By.ID, "results").text
    finally:
        driver.quit()
