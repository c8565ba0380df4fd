"""The playground page in a real headless browser (Debian's chromium driven by Playwright): a streamed
chat with a decoder, a task model's answer and an encoder's attention map; a screenshot is written."""
import shutil
from pathlib import Path

import pytest

import serve_helpers as sh
from plmkit.serving import ServeSettings, create_app

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "runs" / "screenshots" / "playground.png"


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium: `make install` installs Debian's (apt-get install chromium)"
    return path


@pytest.mark.slow
def test_playground_chat_task_and_attention_in_a_browser(tmp_path, minilm_dir, minilm_classifier):
    from playwright.sync_api import sync_playwright
    models = {"gpt": str(sh.decoder_dir(tmp_path)), "sentiment": str(minilm_classifier), "minilm": str(minilm_dir)}
    with sh.running(create_app(models, ServeSettings(device="cpu"))) as url, sync_playwright() as p:
        expected = sh.post(url, "/v1/chat/completions", {"model": "gpt", "temperature": 0, "max_tokens": 24,
                                                         "messages": [{"role": "user", "content": "hello"}]})[1]
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready=yes]", timeout=30000)
            assert page.locator("#chat-model option").all_inner_texts() == ["gpt"]

            page.fill("#chat-temperature", "0")
            page.fill("#chat-max-tokens", "24")
            page.fill("#chat-input", "hello")
            page.click("#chat-send")
            page.wait_for_selector("#chat-log[data-state=done]", timeout=30000)
            reply = page.locator(".msg.assistant").inner_text()
            assert reply == expected["choices"][0]["message"]["content"]  # streamed into the page, token by token
            assert "generated" in page.inner_text("#chat-note")

            page.select_option("#task-model", "sentiment")
            page.fill("#task-input", "A moving, beautifully acted film.")
            page.click("#task-run")
            page.wait_for_function("document.querySelector('#task-output').textContent.includes('label')")
            answer = sh.post(url, "/v1/classify", {"model": "sentiment", "input": "A moving, beautifully acted film."})[1]
            assert answer["data"][0]["label"] in page.inner_text("#task-output")

            page.select_option("#attn-model", "minilm")
            page.fill("#attn-layers", "0, 5")
            page.click("#attn-run")
            page.wait_for_function("document.querySelector('#attn-image').naturalWidth > 0", timeout=30000)
            assert page.evaluate("document.querySelector('#attn-image').naturalHeight") > 200
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
