"""`medseg serve`'s page in headless Chromium (issue 20): a shared Hippocampus case uploaded through the page of a
loopback server, the job waited for, the overlay seen in the three planes (pixels of a label colour in a
screenshot, saved to test-artifacts/serve_page.png), labels toggled off, and the mask downloaded and compared with
`medseg predict`'s output for the same case."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")

from medseg.io import read_image  # noqa: E402
from tests.conftest import run_cli, shared_path  # noqa: E402
from tests.test_report_browser import ARTIFACTS, browser  # noqa: E402,F401  (headless Chromium for the module)
from tests.test_serve import TOKEN, start_server  # noqa: E402


@pytest.fixture(scope="module")
def hippocampus_run(tmp_path_factory):
    """A Hippocampus model trained for a few seconds on 8 cases: enough to predict some of each case."""
    root = shared_path("datasets", "hippocampus")
    official = json.loads((root / "split_160_40.json").read_text())
    tmp = tmp_path_factory.mktemp("serve_browser")
    split = tmp / "split.json"
    split.write_text(json.dumps({"train": official["train"][:8], "val": official["val"][:2]}))
    run = tmp / "run"
    run_cli("train", root, "--out", run, "--split-file", split, "--epochs", "3", "--iterations", "20", "--features", "8",
            "--threads", "2")
    case = root / "imagesTr" / f"{official['val'][0]}.nii.gz"
    run_cli("predict", run, case, "--out", tmp / "reference")
    return run, case, tmp / "reference" / case.name, tmp


def _colour_pixels(png: bytes, colour) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return int((rgb == np.array(colour, np.uint8)).all(1).sum())


def test_upload_view_toggle_and_download_through_the_page(browser, hippocampus_run):  # noqa: F811
    import urllib.request

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run, case, reference, tmp = hippocampus_run
    server, url = start_server(run, tmp / "data")
    try:
        browser.set_window_size(1400, 900)
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "token-row").is_displayed())
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "file").send_keys(str(case))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 60).until(lambda d: all(d.find_element(By.ID, f"img-{p}").get_attribute("data-loaded")
                                                      for p in ("axial", "coronal", "sagittal")))
        assert browser.find_element(By.ID, "status").text == "Done."
        request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        classes = json.loads(urllib.request.urlopen(request).read())["models"][0]["classes"]
        job_id = browser.find_element(By.ID, "job-id").text
        request = urllib.request.Request(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"})
        present = json.loads(urllib.request.urlopen(request).read())["classes"]
        assert present, "the model should predict some of the case"
        colours = [classes[c]["color"] for c in present]
        shot = browser.get_screenshot_as_png()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "serve_page.png").write_bytes(shot)
        assert sum(_colour_pixels(shot, c) for c in colours) > 20, "the overlay's label colours should be on screen"
        # every label toggled off: no label colour left in the planes
        before = {p: browser.find_element(By.ID, f"img-{p}").get_attribute("data-loaded") for p in ("axial", "coronal", "sagittal")}
        boxes = browser.find_elements(By.CSS_SELECTOR, "#classes input[type=checkbox]")
        for box in boxes:
            box.click()
        # each click asks for a new picture of every plane; wait for the last one
        last = {p: str(int(before[p]) + len(boxes)) for p in before}
        WebDriverWait(browser, 20).until(lambda d: all(d.find_element(By.ID, f"img-{p}").get_attribute("data-loaded") == last[p]
                                                      for p in before))
        hidden = sum(_colour_pixels(browser.find_element(By.ID, f"img-{p}").screenshot_as_png, c) for p in before for c in colours)
        assert hidden == 0
        assert {b.text for b in browser.find_elements(By.CSS_SELECTOR, "#downloads button")} == {"mask", "probabilities", "uncertainty"}
        # the mask, downloaded: what `medseg predict` wrote for the same case
        request = urllib.request.Request(f"{url}/v1/jobs/{job_id}/mask", headers={"Authorization": f"Bearer {TOKEN}"})
        (tmp / "downloaded.nii.gz").write_bytes(urllib.request.urlopen(request).read())
        got, want = read_image(tmp / "downloaded.nii.gz"), read_image(reference)
        assert np.array_equal(got.array, want.array) and got.geometry == want.geometry
    finally:
        server.terminate()
        server.wait(10)
