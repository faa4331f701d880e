"""The app in a real browser: Debian chromium driven by Playwright (no browser download).

Flow: load the page, read the model note, pick an example, generate while the page's progress bar counts the
denoising steps, see points in the viewer, scrub time, add two keyframes from two different views, render, see the
video and the finished bar, upload a malformed camera path (a toast; the Camera-path dropdown stays usable).
Screenshots go to $MORE4D_SHOTS (default: pytest's tmp folder).
Needs `apt-get install -y chromium` (scripts/test.sh installs it when run as root) and pip `playwright`; without
them the test fails with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright import sync_api as playwright_api

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-gl=angle", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from ui.server import serve_in_background, tiny_service

    with serve_in_background(tiny_service(tmp_path_factory.mktemp("weights"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed: apt-get install -y chromium (scripts/test.sh does it as root)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _canvas_stats(png: bytes) -> tuple[float, int]:
    """(std of the viewer image, number of distinct colours): a blank canvas is flat."""
    import io

    from PIL import Image

    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)
    return float(arr.std()), len(np.unique(arr.reshape(-1, 3)[::7], axis=0))


def _set_number(page, elem_id: str, value: str, attempts: int = 3) -> None:
    """Type `value` into a slider's number box until the page keeps it (an event still settling can reset it)."""
    box = page.locator(f"#{elem_id} input[type='number']")
    for _ in range(attempts):
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(300)
        if box.input_value() == value:
            return
    playwright_api.expect(box).to_have_value(value)


def _drag(page, box, dx: float, dy: float) -> None:
    x, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x + dx * i / 10, y + dy * i / 10)
    page.mouse.up()


def test_browser_generate_scrub_keyframes_render(app_url, browser, tmp_path):
    shots = Path(os.environ.get("MORE4D_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)

    # 1) the viewer connects through the Gradio port
    frame = page.frame_locator("#more4d-viewer iframe")
    frame.get_by_text("Connected").wait_for(timeout=30_000)
    toast = frame.locator(".mantine-Notification-closeButton")  # headless chromium's "Software WebGL" notice
    if toast.count():
        toast.first.click()
    viewer_box = page.locator("#more4d-viewer iframe").bounding_box()

    # 2) the page says what the model can and cannot do
    playwright_api.expect(page.locator("#more4d-model-note")).to_contain_text("learned only procedural")

    # 3) pick an example, ask for a small scene (5 frames, 4 steps: CPU time) and generate; the page's progress bar
    #    names the stage and the step, with the time left
    page.locator("#more4d-examples [data-testid='dataset-cell-0-0']").click()
    playwright_api.expect(page.get_by_label("Prompt")).not_to_have_value("", timeout=10_000)
    page.get_by_text("Advanced settings").click()
    _set_number(page, "more4d-frames", "5")
    _set_number(page, "more4d-steps", "4")
    page.get_by_text("Render settings").click()
    _set_number(page, "more4d-render-steps", "1")
    playwright_api.expect(page.locator("#more4d-frames input[type='number']")).to_have_value("5")
    page.get_by_role("button", name="Generate").click()
    bar = page.locator("#more4d-progress")
    playwright_api.expect(bar).to_contain_text(re.compile("Denoising the trajectories: step|failed"), timeout=300_000)
    assert "failed" not in bar.inner_text(), bar.inner_text()
    page.screenshot(path=str(shots / "app_generating.png"))
    assert int(bar.get_by_role("progressbar").get_attribute("aria-valuenow")) > 0
    try:
        page.get_by_text("Scene ready: 5 frames").wait_for(timeout=300_000)
    finally:
        page.screenshot(path=str(shots / "after_generate.png"), full_page=True)
    playwright_api.expect(bar).to_contain_text("Generate: 5 frames", timeout=10_000)
    frame.get_by_text("Frame", exact=True).wait_for()
    page.wait_for_timeout(1500)
    blank = page.locator("#more4d-viewer iframe").screenshot(path=str(shots / "viewer_scene.png"))
    std, colours = _canvas_stats(blank)
    assert colours > 50, f"the viewer shows no points (only {colours} colours)"
    page.screenshot(path=str(shots / "app.png"), full_page=True)

    # 4) scrub time: move the frame slider to the last frame with the keyboard
    slider = frame.get_by_role("slider").first
    slider.focus()
    slider.press("End")
    page.wait_for_timeout(800)
    scrubbed = page.locator("#more4d-viewer iframe").screenshot(path=str(shots / "viewer_scrubbed.png"))
    assert scrubbed != blank, "scrubbing time did not change the viewer"

    slider.press("Home")

    # 5) two keyframes from two different views (orbit by dragging between them)
    add = frame.get_by_role("button", name="Add keyframe from view")
    add.click()
    _drag(page, viewer_box, -70, 20)
    page.wait_for_timeout(500)
    add.click()
    frame.get_by_text("2 keyframes").wait_for(timeout=10_000)
    frame.get_by_role("button", name="Reset view").click()  # then orbit to the side to see keyframes and path
    page.wait_for_timeout(500)
    _drag(page, viewer_box, 260, 50)
    page.wait_for_timeout(1000)
    page.locator("#more4d-viewer iframe").screenshot(path=str(shots / "viewer_path.png"))

    # 6) render the viewer's path from the page: the render bar ends full, the video plays
    page.get_by_role("button", name="Render this path").click()
    page.get_by_text("Rendered 5 frames").first.wait_for(timeout=300_000)
    bar = page.locator("#more4d-render-progress")
    playwright_api.expect(bar).to_contain_text("Render: 5 frames rendered", timeout=10_000)
    assert bar.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    video = page.locator("video").first
    video.wait_for(timeout=30_000)
    assert page.locator("video").count() >= 3
    duration = page.evaluate("() => new Promise(r => { const v = document.querySelector('video'); "
                             "if (v.readyState >= 1) r(v.duration); else v.onloadedmetadata = () => r(v.duration); })")
    assert duration > 0.5, f"the rendered video does not play (duration {duration})"
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "app_rendered.png"), full_page=True)

    # 7) a malformed camera-path upload: a toast naming the file (not where the server keeps it), and the
    #    Camera-path dropdown stays a dropdown that takes clicks
    malformed = tmp_path / "my_path.json"
    malformed.write_text('{"keyframes": [{"c2w": "oops"}]}')
    page.locator("#more4d-path-file input[type='file']").set_input_files(str(malformed))
    toast = page.get_by_text("is malformed").first
    toast.wait_for(timeout=30_000)
    assert "my_path.json" in toast.inner_text() and "/tmp" not in toast.inner_text()
    page.wait_for_timeout(500)
    assert "Error" not in page.locator("#more4d-preset").inner_text()
    page.locator("#more4d-preset input").click()
    page.get_by_role("option", name="orbit", exact=True).click()
    page.get_by_text("Preset orbit loaded").wait_for(timeout=30_000)
    assert not errors, f"page errors: {errors}"
    page.close()
